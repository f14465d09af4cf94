"""The BPR training loop of the LightGCN baseline (He et al., SIGIR 2020), on an event log.

Why it is kept next to DREAM's served-readout trainer
(:mod:`models.readout_trainer`): LightGCN trained the way its paper trains it
(BPR, user embeddings, uniform negatives) is the baseline a reviewer expects;
its item vectors are then served by the same DreamUMM readout as DREAM's,
with early stopping on the same validation queries, so the table shows what
the objective is worth and nothing else.

A model is anything with ``loss(users, pos, neg) -> (total, {part: value})``
and ``embeddings() -> (users [U,D], items [I,D])``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from models.early_stopping import EarlyStopping, FitResult


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 60
    batch_size: int = 2048
    lr: float = 5e-3
    patience: int = 3          # epochs without a better validation score before stopping
    seed: int = 0
    progress: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def vectors(model) -> tuple[np.ndarray, np.ndarray]:
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


def fit_bpr(model: torch.nn.Module, users: np.ndarray, items: np.ndarray, n_items: int,
            validate: Callable[[np.ndarray], float] | None, config: TrainConfig, name: str = "lightgcn") -> FitResult:
    """Train ``model`` with BPR on the (user, item) pairs; keep the weights of the best ``validate(item vectors)``.

    Without ``validate`` it trains for ``config.epochs`` and keeps the last weights (a refit).
    """
    torch.manual_seed(config.seed)
    sampler = BprSampler(users, items, n_items=n_items, seed=config.seed)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    stopper = EarlyStopping(model, config.patience)
    n_batches = -(-len(sampler) // config.batch_size)
    for epoch in range(1, config.epochs + 1):
        model.train()
        running = 0.0
        bar = tqdm(sampler.batches(config.batch_size), total=n_batches, desc=f"{name} epoch {epoch}",
                   disable=not config.progress, leave=False, dynamic_ncols=True)
        for step, (u, pos, neg) in enumerate(bar, 1):
            loss, _ = model.loss(u, pos, neg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            running += (float(loss.detach()) - running) / step
        if validate is None:
            stopper.keep_last(epoch)
            continue
        score = validate(vectors(model)[1])
        stopper.record({"epoch": epoch, "loss": running, "valid": score})
        if stopper.update(epoch, score):
            break
    return stopper.finish()
