"""The one training loop for the graph recommenders (LightGCN baseline, DREAM).

Why shared: the baseline must be trained exactly like the model it is the
baseline of — same BPR sampling, same optimiser, same early stopping on
validation Recall@20, same evaluation — or the comparison in ``evaluate``
means nothing.

A model is anything with ``loss(users, pos, neg) -> (total, {part: value})``
and ``embeddings() -> (users [U,D], items [I,D])``, scored by inner product.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Iterator, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from dreamstream.data.metrics import full_sort_topk, topk_metrics
from dreamstream.data.split import Split

EVAL_K = 50
SELECT_ON = "recall@20"


class Recommender(Protocol):
    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, dict]: ...
    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 2048
    lr: float = 5e-4           # higher rates peak after 1-2 epochs and overfit on the synthetic set
    patience: int = 3          # epochs without a better validation Recall@20 before stopping
    seed: int = 0
    progress: bool = True      # tqdm bars with the running loss

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)  # one row per epoch: epoch, loss, parts, valid metrics, seconds
    best_epoch: int = 0
    valid: dict[str, float] = field(default_factory=dict)  # validation metrics of the kept (best) weights
    seconds: float = 0.0


class Evaluator:
    """Full-catalogue metrics of a split's kept users, with masks and targets computed once."""

    def __init__(self, split: Split):
        self.split = split
        self._exclude = {upto: split.exclude_items(upto) for upto in ("valid", "test")}
        self._targets = {upto: split.targets(upto) for upto in ("valid", "test")}

    def __call__(self, users: np.ndarray, items: np.ndarray, upto: str = "valid") -> dict[str, float]:
        """Metrics @10/20/50 for vectors of *all* dataset users ``users`` [n_users, D] and items."""
        topk = full_sort_topk(users[self.split.users], items, self._exclude[upto], EVAL_K)
        return topk_metrics(topk, self._targets[upto])

    def model(self, model: Recommender, upto: str = "valid") -> dict[str, float]:
        users, items = vectors(model)
        return self(users, items, upto)


def vectors(model: Recommender) -> tuple[np.ndarray, np.ndarray]:
    """A model's final (users, items) as float32 numpy, computed without gradients in eval mode."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        users, items = model.embeddings()
    model.train(was_training)
    return users.cpu().numpy().astype(np.float32), items.cpu().numpy().astype(np.float32)


class BprSampler:
    """Shuffled (user, positive, negative) batches over the training pairs.

    Negatives are uniform over the catalogue; one that happens to be a
    positive of that user is redrawn (a few rounds, vectorised), so BPR never
    pushes a user away from something they watched.
    """

    def __init__(self, users: np.ndarray, items: np.ndarray, n_items: int, seed: int = 0):
        keys = np.unique(np.asarray(users, np.int64) * n_items + np.asarray(items, np.int64))
        self.users, self.items = keys // n_items, keys % n_items
        self.keys, self.n_items = keys, n_items
        self.rng = np.random.default_rng(seed)
        if keys.size == 0:
            raise ValueError("no positive training interactions: nothing to train on (check the split and the data)")

    def __len__(self) -> int:
        return int(self.keys.size)

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        order = self.rng.permutation(self.keys.size)
        for lo in range(0, order.size, batch_size):
            idx = order[lo:lo + batch_size]
            users, pos = self.users[idx], self.items[idx]
            yield torch.from_numpy(users), torch.from_numpy(pos), torch.from_numpy(self.negatives(users))

    def negatives(self, users: np.ndarray, rounds: int = 5) -> np.ndarray:
        neg = self.rng.integers(0, self.n_items, users.size)
        for _ in range(rounds):
            clash = self._is_positive(users, neg)
            if not clash.any():
                break
            neg[clash] = self.rng.integers(0, self.n_items, int(clash.sum()))
        return neg

    def _is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        q = users * self.n_items + items
        at = np.minimum(np.searchsorted(self.keys, q), self.keys.size - 1)
        return self.keys[at] == q


def fit(model: torch.nn.Module, split: Split, config: TrainConfig, name: str,
        evaluator: Evaluator | None = None) -> FitResult:
    """Train ``model`` with BPR batches; keep the weights of the best validation Recall@20.

    Stops after ``config.patience`` epochs without improvement. The model is
    left holding the best weights.
    """
    torch.manual_seed(config.seed)
    evaluator = evaluator or Evaluator(split)
    sampler = BprSampler(*split.train_positive_pairs(), n_items=split.dataset.n_items, seed=config.seed)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    device = next(model.parameters()).device
    result = FitResult()
    best_state, best_score, stale = None, -1.0, 0
    start = time.perf_counter()
    n_batches = -(-len(sampler) // config.batch_size)
    for epoch in range(1, config.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        totals: dict[str, float] = {}
        running = 0.0
        bar = tqdm(sampler.batches(config.batch_size), total=n_batches, desc=f"{name} epoch {epoch}/{config.epochs}",
                   disable=not config.progress, leave=False, dynamic_ncols=True)
        for step, batch in enumerate(bar, 1):
            users, pos, neg = (t.to(device) for t in batch)
            loss, parts = model.loss(users, pos, neg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            running += (float(loss.detach()) - running) / step
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach())
            bar.set_postfix(loss=f"{running:.4f}")
        valid = evaluator.model(model, "valid")
        row = {"epoch": epoch, "loss": running, **{k: v / n_batches for k, v in totals.items()}, **valid,
               "seconds": time.perf_counter() - t0}
        result.history.append(row)
        if config.progress:
            tqdm.write(f"{name} epoch {epoch}: loss {running:.4f}  valid {SELECT_ON} {valid[SELECT_ON]:.4f}")
        if valid[SELECT_ON] > best_score:
            best_score, best_state, stale = valid[SELECT_ON], copy.deepcopy(model.state_dict()), 0
            result.best_epoch, result.valid = epoch, valid
        else:
            stale += 1
            if stale >= config.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - start
    return result
