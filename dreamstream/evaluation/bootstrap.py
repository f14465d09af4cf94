"""Paired bootstrap over users: the uncertainty of one row's difference against another, on the same events.

Why over users and paired: the test events of one user are not independent
(the same tastes, the same session), and every row is scored on the same
events, so the honest unit of resampling is the user and the quantity is
the per-event difference of two rows. Seeds are not independent evidence
either (they share the test users): a seeded row's per-event hit is first
averaged over its seeds, then the users are resampled. The interval is the
percentile interval of the event-weighted mean difference over ``draws``
resamples of the users with replacement (Efron & Tibshirani 1993, ch. 13).
A difference is called significant only when its interval excludes zero.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DRAWS = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    diff: float   # the observed mean difference over events
    lo: float
    hi: float

    @property
    def significant(self) -> bool:
        return self.lo > 0 or self.hi < 0

    def to_dict(self) -> dict:
        return {"diff": self.diff, "lo": self.lo, "hi": self.hi, "significant": self.significant}


def paired_interval(diff: np.ndarray, users: np.ndarray, draws: int = DRAWS, level: float = LEVEL,
                    seed: int = 0) -> Interval:
    """Percentile interval of ``mean(diff)`` with the users (one per event in ``users``) resampled."""
    diff = np.asarray(diff, np.float64)
    _, owner = np.unique(users, return_inverse=True)
    sums = np.bincount(owner, weights=diff)
    counts = np.bincount(owner).astype(np.float64)
    picks = np.random.default_rng(seed).integers(0, sums.size, (draws, sums.size))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return Interval(float(diff.mean()), float(lo), float(hi))


def hits(ranks: list[np.ndarray], k: int = 20) -> np.ndarray:
    """Per event, the share of seeds whose rank is within the top ``k`` (a seeded row's hit, averaged over seeds)."""
    return np.mean([r < k for r in ranks], axis=0)
