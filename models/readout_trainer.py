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

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dreamstream.evaluation.events import EventLog
from dreamstream.evaluation.prequential import Histories, stream_queries


@dataclass(frozen=True)
class ReadoutConfig:
    epochs: int = 40           # upper bound: early stopping ends training (ml-100k-dev peaks after 3-8 epochs)
    batch_size: int = 512
    lr: float = 3e-3
    patience: int = 3          # epochs without a better validation score before stopping
    tau: float = 0.1           # softmax temperature over cosine scores
    seed: int = 0
    progress: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


class ReadoutBatch(NamedTuple):
    history: torch.Tensor   # float32 [B, I]: each item's summed engagement weight in the user's earlier events
    seen: torch.Tensor      # bool [B, I]: items of the earlier events (masked from the softmax)
    targets: torch.Tensor   # int64 [B]


def served_users(history: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """The DreamUMM readout in torch: ``normalize(history @ items)`` [B, D] (zero history -> zero user)."""
    return F.normalize(history @ items, dim=1)


def readout_loss(batch: ReadoutBatch, items: torch.Tensor, tau: float) -> torch.Tensor:
    """Full-softmax cross-entropy of each target against the catalogue, read out as served."""
    logits = served_users(batch.history, items) @ items.T / tau
    return F.cross_entropy(logits.masked_fill(batch.seen, float("-inf")), batch.targets)


class NextItemExamples:
    """Every event of a log that has at least one earlier event of its user: (history -> event) pairs."""

    def __init__(self, log: EventLog):
        qs = stream_queries(log, 0)
        keep = np.fromiter((s.size > 0 for s in qs.seen), bool, len(qs))
        self.log = log
        self.queries = qs.queries[keep]
        self.history = [s for s, k in zip(qs.seen, keep) if k]
        if not self.history:
            raise ValueError("no user has two events in the training log: nothing to learn an item space from")

    def __len__(self) -> int:
        return len(self.history)

    def batches(self, batch_size: int, rng: np.random.Generator):
        order = rng.permutation(len(self))
        for lo in range(0, order.size, batch_size):
            idx = order[lo:lo + batch_size]
            h = Histories(self.log, [self.history[i] for i in idx])
            weighted = h.matrix(self.log.weight)
            yield ReadoutBatch(torch.from_numpy(weighted), torch.from_numpy(h.matrix() > 0),
                               torch.from_numpy(self.log.item[self.queries[idx]]))


@dataclass
class ReadoutFit:
    history: list[dict] = field(default_factory=list)  # per epoch: loss parts, validation score, seconds
    best_epoch: int = 0
    best_score: float = -1.0
    seconds: float = 0.0


def fit_readout(model: torch.nn.Module, examples: NextItemExamples, validate: Callable[[np.ndarray], float] | None,
                config: ReadoutConfig, name: str = "dream") -> ReadoutFit:
    """Train ``model`` on ``examples``; keep the weights of the best ``validate(item vectors)``.

    Without ``validate`` it trains for ``config.epochs`` and keeps the last weights (a refit).
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    result, best_state, stale = ReadoutFit(), None, 0
    start = time.perf_counter()
    n_batches = -(-len(examples) // config.batch_size)
    for epoch in range(1, config.epochs + 1):
        model.train()
        totals: dict[str, float] = {}
        bar = tqdm(examples.batches(config.batch_size, rng), total=n_batches, leave=False, dynamic_ncols=True,
                   desc=f"{name} epoch {epoch}", disable=not config.progress)
        for batch in bar:
            loss, parts = model.loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            for k, v in {"loss": loss, **parts}.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        if validate is None:
            result.history.append({"epoch": epoch, **{k: v / n_batches for k, v in totals.items()},
                                   "seconds": round(time.perf_counter() - start, 1)})
            result.best_epoch = epoch
            continue
        score = validate(item_vectors(model))
        result.history.append({"epoch": epoch, **{k: v / n_batches for k, v in totals.items()},
                               "valid": score, "seconds": round(time.perf_counter() - start, 1)})
        if config.progress:
            tqdm.write(f"{name} epoch {epoch}: loss {totals['loss'] / n_batches:.4f}  valid {score:.4f}")
        if score > result.best_score:
            result.best_score, result.best_epoch, best_state, stale = score, epoch, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - start
    return result


def item_vectors(model: torch.nn.Module) -> np.ndarray:
    """The model's unit item vectors as float32 numpy, computed in eval mode without gradients."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        items = model.items()
    model.train(was_training)
    return items.cpu().numpy().astype(np.float32)
