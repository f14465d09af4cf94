"""Engagement weight and time decay: the two scalars every user update multiplies by.

Shared by the stream worker (per event) and by the offline DreamUMM reference
(per user history), so the streamed vectors and the offline ones are the same
numbers, not two implementations that agree by luck. numpy only: the worker
must not import torch.

Weight ``r = f(watch_ms, duration_ms, kind)``:

* a watch with completion ratio ``c = watch_ms / duration_ms`` below
  ``skip_ratio`` is a quick skip: ``r = skip_weight`` (negative, pushes away);
* otherwise ``r = min(c, replay_cap)``: a full play weighs 1, a replay more,
  and it depends only on the ratio, so full plays of the same length weigh the
  same whatever the video;
* an impression (``kind == "impression"``) does not move the user vector at
  all; it feeds the Candidate-DreamUMM blend with ``impression_weight``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

WATCH = "watch"
IMPRESSION = "impression"
KINDS = (WATCH, IMPRESSION)


@dataclass(frozen=True)
class Engagement:
    """How a watch event turns into a weight. Defaults follow common micro-video practice."""

    skip_ratio: float = 0.2
    skip_weight: float = -0.3
    replay_cap: float = 1.5
    impression_weight: float = 1.0

    def weight(self, watch_ms: np.ndarray | float, duration_ms: np.ndarray | float) -> np.ndarray:
        """Weight of watch events (vectorised); impressions are handled by the caller."""
        ratio = np.asarray(watch_ms, dtype=np.float64) / np.asarray(duration_ms, dtype=np.float64)
        return np.where(ratio < self.skip_ratio, self.skip_weight, np.minimum(ratio, self.replay_cap)).astype(np.float32)

    def is_positive(self, watch_ms: np.ndarray | float, duration_ms: np.ndarray | float) -> np.ndarray:
        """A positive event is a watch that is not a skip: the history that counts for cold start."""
        return self.weight(watch_ms, duration_ms) > 0


def decay(dt_ms: np.ndarray | float, half_life_s: float) -> np.ndarray:
    """``0.5 ** (dt / half_life)`` for event-time gaps in ms; 1 when the half-life is infinite.

    A negative gap (an event older than the last applied one) does not grow
    the state: it is clamped to 0, i.e. no decay.
    """
    dt = np.maximum(np.asarray(dt_ms, dtype=np.float64), 0.0)
    if math.isinf(half_life_s):
        return np.ones_like(dt, dtype=np.float32)
    return np.power(0.5, dt / (half_life_s * 1000.0)).astype(np.float32)
