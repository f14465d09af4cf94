"""Training an item space for the user vector the worker serves: next-item softmax through the DreamUMM readout.

Why this objective: the stream worker never looks a user up in a table of
trained user embeddings; it serves ``u = normalize(sum_e r_e v_e)`` over the
user's watched items (DreamUMM's closed form) and retrieves by ``<u, v>``
from the index of unit item vectors. An item space trained with separate
user embeddings (BPR) is optimised for a user the product never serves; on
ml-100k-dev that gap left every model below item-kNN (issue 19). So every
training step here *is* a served step: a user's events before a target
event are read out exactly as the worker reads them out, and the target
must win a full softmax over the catalogue (``<u, v>/tau``, the user's
earlier items masked as the ranking service masks them). Users born after
training are served the same way, so nothing in the model is per user.

A model is anything with ``items() -> [I, D]`` unit rows and
``loss(batch) -> (total, {part: value})``; early stopping is on a validation
callback over the item vectors (the caller decides the protocol: prequential
on a time cut, or leave-last-out), and the best epoch's weights are restored.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dreamstream.evaluation.events import EventLog
from models.early_stopping import EarlyStopping, FitResult, train_step


@dataclass(frozen=True)
class ReadoutConfig:
    epochs: int = 40           # upper bound: early stopping ends training
    batch_size: int = 4096     # events per step (whole user sequences; every event after a user's first is an example)
    lr: float = 1e-2
    patience: int = 2          # epochs without a better validation score before stopping
    tau: float = 0.1           # softmax temperature over cosine scores
    half_life_s: float = float("inf")  # the decay the served vector will use (train as served)
    seed: int = 0
    progress: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


class ReadoutBatch(NamedTuple):
    """Whole user sequences, concatenated: every event after a user's first is a (history -> event) example.

    Why sequences and not one history per example: the served user vector
    after ``t`` events is the running sum of the first ``t`` weighted item
    vectors, so one cumulative sum over a user's sequence reads out every
    prefix at once, O(events x D) instead of O(events x catalogue) per batch.
    """

    items: torch.Tensor     # int64 [N]: item of each event, users one after the other, each in time order
    weights: torch.Tensor   # float32 [N]: engagement weight of each event
    first: torch.Tensor     # int64 [N]: index (in this batch) of the first event of the event's user
    targets: torch.Tensor   # int64 [M]: rows of the events that are examples (not a user's first event)
    ts: torch.Tensor        # float64 [N]: event time, seconds
    half_life_s: float      # the served decay (inf: none)

    def users(self, item_vectors: torch.Tensor, pick: torch.Tensor | None = None) -> torch.Tensor:
        """[M, D]: the served readout of each example's earlier events, decayed to the latest one as the worker does.

        Without decay, exclusive prefix sums per user. With a half-life, a
        window of each example's last :data:`DECAY_WINDOW` events: an event
        ``DECAY_WINDOW`` events back is, at the half-lives that serve best
        (minutes), weighted by nothing a float32 sum would keep. ``pick``: only
        these examples (indexes into ``targets``).
        """
        x = self.weights[:, None] * item_vectors[self.items]
        targets = self.targets if pick is None else self.targets[pick]
        if math.isinf(self.half_life_s):
            return F.normalize(_prefix(x, self.first)[targets], dim=1)
        back = targets[:, None] - torch.arange(1, DECAY_WINDOW + 1)[None, :]  # [M, W]
        inside = back >= self.first[targets][:, None]
        back = back.clamp(min=0)
        age = (self.ts[targets - 1][:, None] - self.ts[back]).clamp(min=0.0)
        g = torch.where(inside, torch.pow(0.5, age / self.half_life_s), torch.zeros_like(age)).float()
        return F.normalize((g[..., None] * x[back]).sum(dim=1), dim=1)

    def seen(self, n_items: int) -> torch.Tensor:
        """bool [M, I]: the items of each example's earlier events (masked, as the ranking service masks them).

        An item is seen before an example when the user's first event of it
        comes earlier: one [users, I] table of first rows, compared with each
        example's row (a prefix sum of one-hot rows, [N, I] floats, did the
        same at about a quarter of a DREAM step's time).
        """
        segment = torch.cumsum((self.first == torch.arange(self.first.shape[0])).to(torch.int64), dim=0) - 1
        n_rows = self.items.shape[0]
        first_row = torch.full(((int(segment[-1]) + 1) * n_items,), n_rows, dtype=torch.int32)
        first_row.scatter_reduce_(0, segment * n_items + self.items, torch.arange(n_rows, dtype=torch.int32),
                                  reduce="amin")
        return first_row.view(-1, n_items)[segment[self.targets]] < self.targets[:, None].to(torch.int32)

    @property
    def target_items(self) -> torch.Tensor:
        return self.items[self.targets]


DECAY_WINDOW = 64


def _prefix(x: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """Per-segment exclusive cumulative sums of the rows of ``x`` (segments given by each row's first index)."""
    exclusive = torch.cumsum(x, dim=0) - x
    return exclusive - exclusive[first]


def readout_loss(batch: ReadoutBatch, items: torch.Tensor, tau: float) -> torch.Tensor:
    """Full-softmax cross-entropy of each example's event against the catalogue, read out as served.

    An example whose item the user had already watched is left out: the
    ranking service masks watched items, so a repeat can never be served and
    has nothing to teach.
    """
    seen, target = batch.seen(items.shape[0]), batch.target_items
    fresh = ~seen[torch.arange(target.shape[0]), target]
    logits = (batch.users(items)[fresh] @ items.T / tau).masked_fill(seen[fresh], float("-inf"))
    return F.cross_entropy(logits, target[fresh]) if bool(fresh.any()) else logits.sum() * 0.0


class NextItemExamples:
    """A log's users as sequences, packed into batches of about ``batch_events`` events (whole users each)."""

    def __init__(self, log: EventLog):
        order, _, start = log.by_user
        lengths = np.diff(start)
        self.log, self.order, self.start, self.lengths = log, order, start, lengths
        self.users = np.flatnonzero(lengths >= 2)
        if self.users.size == 0:
            raise ValueError("no user has two events in the training log: nothing to learn an item space from")

    def __len__(self) -> int:
        """Number of examples (events after each user's first)."""
        return int((self.lengths[self.users] - 1).sum())

    def n_batches(self, batch_events: int) -> int:
        return max(1, -(-int(self.lengths[self.users].sum()) // batch_events))

    def batches(self, batch_events: int, rng: np.random.Generator, half_life_s: float = math.inf):
        users = rng.permutation(self.users)
        bounds = np.cumsum(self.lengths[users])
        cuts = np.searchsorted(bounds, np.arange(batch_events, bounds[-1], batch_events), side="left") + 1
        for group in np.split(users, np.unique(np.clip(cuts, 1, users.size - 1)) if users.size > 1 else []):
            if group.size:
                yield self._batch(group, half_life_s)

    def _batch(self, users: np.ndarray, half_life_s: float = math.inf) -> ReadoutBatch:
        lengths = self.lengths[users]
        rows = np.concatenate([self.order[self.start[u]:self.start[u + 1]] for u in users])
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        first = np.repeat(offsets, lengths)
        targets = np.flatnonzero(np.arange(rows.size) != first)
        return ReadoutBatch(torch.from_numpy(self.log.item[rows]), torch.from_numpy(self.log.weight[rows].astype(np.float32)),
                            torch.from_numpy(first), torch.from_numpy(targets), torch.from_numpy(self.log.ts[rows]),
                            half_life_s)


def fit_readout(model: torch.nn.Module, examples: NextItemExamples, validate: Callable[[np.ndarray], float] | None,
                config: ReadoutConfig, name: str = "dream") -> FitResult:
    """Train ``model`` on ``examples``; keep the weights of the best ``validate(item vectors)``.

    Without ``validate`` it trains for ``config.epochs`` and keeps the last weights (a refit).
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    stopper = EarlyStopping(model, config.patience)
    n_batches = examples.n_batches(config.batch_size)
    for epoch in range(1, config.epochs + 1):
        model.train()
        totals: dict[str, float] = {}
        bar = tqdm(examples.batches(config.batch_size, rng, config.half_life_s), total=n_batches, leave=False, dynamic_ncols=True,
                   desc=f"{name} epoch {epoch}", disable=not config.progress)
        for batch in bar:
            loss = train_step(opt, *model.loss(batch), totals)
            bar.set_postfix(loss=f"{loss:.3f}")
        means = {k: v / n_batches for k, v in totals.items()}
        if validate is None:
            stopper.record({"epoch": epoch, **means})
            stopper.keep_last(epoch)
            continue
        score = validate(item_vectors(model))
        stopper.record({"epoch": epoch, **means, "valid": score})
        if config.progress:
            tqdm.write(f"{name} epoch {epoch}: loss {means['loss']:.4f}  valid {score:.4f}")
        if stopper.update(epoch, score):
            break
    return stopper.finish()


def item_vectors(model: torch.nn.Module) -> np.ndarray:
    """The model's unit item vectors as float32 numpy, computed in eval mode without gradients."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        items = model.items()
    model.train(was_training)
    return items.cpu().numpy().astype(np.float32)


def served_examples(log: EventLog, item_vectors: np.ndarray, half_life_s: float = float("inf"),
                    batch_events: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (served user vector, next item) pair of ``log`` over fixed ``item_vectors``: ([M, D], [M]).

    The same readout as training (decay window included), with the repeats
    left out as :func:`readout_loss` leaves them out. What the item tower is
    taught to be retrieved by (:func:`models.dream.distil_item_tower`).
    """
    vectors = torch.as_tensor(np.asarray(item_vectors), dtype=torch.float32)
    users, targets = [], []
    for batch in NextItemExamples(log).batches(batch_events, np.random.default_rng(0), half_life_s):
        target = batch.target_items
        fresh = ~batch.seen(vectors.shape[0])[torch.arange(target.shape[0]), target]
        users.append(batch.users(vectors)[fresh])
        targets.append(target[fresh])
    return torch.cat(users), torch.cat(targets)
