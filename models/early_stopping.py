"""Early stopping on a validation score, with the best epoch's weights restored: the one rule every trainer uses."""
from __future__ import annotations

import copy

import torch


class EarlyStopping:
    """Track a model's best validation score; say when ``patience`` epochs have passed without a better one.

    Why keep a copy of the weights rather than stop at the last epoch: the
    last epoch is ``patience`` epochs past the best one, by construction.
    """

    def __init__(self, model: torch.nn.Module, patience: int):
        self.model, self.patience = model, patience
        self.best_score, self.best_epoch, self.stale = -1.0, 0, 0
        self._state: dict | None = None

    def update(self, epoch: int, score: float) -> bool:
        """Record ``score`` for ``epoch``; True when training should stop."""
        if score > self.best_score:
            self.best_score, self.best_epoch, self.stale = score, epoch, 0
            self._state = copy.deepcopy(self.model.state_dict())
            return False
        self.stale += 1
        return self.stale >= self.patience

    def restore(self) -> None:
        """Put the best epoch's weights back (nothing to do if no epoch was validated)."""
        if self._state is not None:
            self.model.load_state_dict(self._state)
