"""Early stopping on a validation score, with the best epoch's weights restored: the one rule every trainer uses."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch


@dataclass
class FitResult:
    """What a fit did: one history row per epoch (loss parts, validation score, seconds), the best epoch, its score."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -1.0
    seconds: float = 0.0


class EarlyStopping:
    """Track a model's best validation score; say when ``patience`` epochs have passed without a better one.

    Why keep a copy of the weights rather than stop at the last epoch: the
    last epoch is ``patience`` epochs past the best one, by construction.
    It also keeps the fit's :class:`FitResult` (``result``), so a trainer's
    loop only trains, validates and asks.
    """

    def __init__(self, model: torch.nn.Module, patience: int):
        self.model, self.patience = model, patience
        self.best_score, self.best_epoch, self.stale = -math.inf, 0, 0
        self.result = FitResult()
        self._state: dict | None = None
        self._started = time.perf_counter()

    def record(self, row: dict) -> None:
        """One epoch's history row, stamped with the seconds since the fit began."""
        self.result.history.append({**row, "seconds": round(time.perf_counter() - self._started, 1)})

    def update(self, epoch: int, score: float) -> bool:
        """Record ``score`` for ``epoch``; True when training should stop."""
        if score > self.best_score:
            self.best_score, self.best_epoch, self.stale = score, epoch, 0
            self.result.best_score, self.result.best_epoch = score, epoch
            self._state = copy.deepcopy(self.model.state_dict())
            return False
        self.stale += 1
        return self.stale >= self.patience

    def keep_last(self, epoch: int) -> None:
        """No validation (a refit): the last epoch trained is the one kept."""
        self.result.best_epoch = epoch

    def restore(self) -> None:
        """Put the best epoch's weights back (nothing to do if no epoch was validated)."""
        if self._state is not None:
            self.model.load_state_dict(self._state)

    def finish(self) -> FitResult:
        """The best weights back in the model; the fit's result with its total seconds."""
        self.restore()
        self.result.seconds = time.perf_counter() - self._started
        return self.result


def train_step(opt: torch.optim.Optimizer, loss: torch.Tensor, parts: dict[str, torch.Tensor],
               totals: dict[str, float]) -> float:
    """One gradient step on ``loss``; adds the loss and each named part to ``totals``; returns the loss."""
    opt.zero_grad()
    loss.backward()
    opt.step()
    for name, value in {"loss": loss, **parts}.items():
        totals[name] = totals.get(name, 0.0) + float(value.detach())
    return float(loss.detach())
