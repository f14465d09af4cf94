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
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from dreamstream.data.recbole import Dataset

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


# A rating dataset (MovieLens, Amazon, ...) has no watch time: each rating is replayed as a play whose completion
# ratio this table gives, so the worker weighs it through the same `Engagement.weight` as a real play. Chosen on
# ml-100k-dev by prequential validation HitRate@20 (docs/evaluation.md): every rating is a full play (0.264);
# a 1 as a skip (0.258) or plays graded by rating (1 skip, then 0.5, 0.8, 1.0, 1.2: 0.257) both serve worse -
# on MovieLens, rating a film at all says the user chose to watch it.
RATING_COMPLETION = {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0, 5: 1.0}


def rating_completion(rating: np.ndarray) -> np.ndarray:
    """Completion ratio of the play a rating stands for (:data:`RATING_COMPLETION`; <= 0 is a skip, 0)."""
    r = np.clip(np.rint(np.asarray(rating, dtype=np.float64)), 0, 5).astype(np.int64)
    table = np.array([0.0] + [RATING_COMPLETION[k] for k in range(1, 6)])
    return table[r]


SYNTH_DURATION_MS = 15_000  # the length of the play a rating is replayed as


def watch_times(ds: "Dataset") -> tuple[np.ndarray, np.ndarray]:
    """(watch_ms, duration_ms) per row of a dataset: recorded ones, or the play a rating stands for.

    A dataset without both columns (MovieLens, Amazon, ...: a rating, no
    watch time) gets ``duration_ms = SYNTH_DURATION_MS`` and
    ``watch_ms = rating_completion(rating) * duration_ms``. The replay tool
    sends exactly these, and the offline evaluation weighs events from them,
    so the worker and the evaluation see the same weights.
    """
    if "watch_ms" in ds.columns and "duration_ms" in ds.columns:
        return ds.columns["watch_ms"], ds.columns["duration_ms"]
    duration = np.full(ds.user.shape[0], float(SYNTH_DURATION_MS))
    return np.round(rating_completion(ds.rating) * duration), duration


def dataset_weights(ds: "Dataset", engagement: Engagement | None = None) -> np.ndarray:
    """float32 [N]: each dataset row's engagement weight, as the worker would compute it from the replayed event."""
    return (engagement or Engagement()).weight(*watch_times(ds))


def decay(dt_ms: np.ndarray | float, half_life_s: float) -> np.ndarray:
    """``0.5 ** (dt / half_life)`` for event-time gaps in ms; 1 when the half-life is infinite.

    A negative gap (an event older than the last applied one) does not grow
    the state: it is clamped to 0, i.e. no decay.
    """
    dt = np.maximum(np.asarray(dt_ms, dtype=np.float64), 0.0)
    if math.isinf(half_life_s):
        return np.ones_like(dt, dtype=np.float32)
    return np.power(0.5, dt / (half_life_s * 1000.0)).astype(np.float32)
