"""The served user vector as a prequential scorer: DreamUMM over a trained item space.

What the stream worker publishes for a user is ``u = s/|s|`` with
``s = sum_e g_e r_e v_e`` (:mod:`dreamstream.dreamumm_ref`): every event's
engagement weight ``r_e`` (:func:`dreamstream.engagement.dataset_weights`) and
its decay to the user's latest event ``g_e = 0.5 ** ((t_last - t_e) / half_life)``.
Written here as one matrix product per batch instead of a loop per event; the
tests check it against :func:`dreamstream.dreamumm_ref.user_vector`, the
worker's reference, so this row of the table is the streamed number.

A query with no history gets the training past's popularity: a ranking
service has nothing else for a user the worker has not published yet.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dreamstream.dreamumm_ref import normalize
from dreamstream.engagement import decay
from dreamstream.evaluation.baselines import Popularity
from dreamstream.evaluation.events import EventLog
from dreamstream.evaluation.prequential import Histories


def row_weights(log: EventLog, rows: np.ndarray, half_life_s: float) -> np.ndarray:
    """float32 [len(rows)]: each history event's ``engagement weight * decay to the history's latest event``."""
    if not rows.size:
        return np.zeros(0, np.float32)
    return decay((log.ts[rows[-1]] - log.ts[rows]) * 1000.0, half_life_s) * log.weight[rows]


def history_weights(histories: Histories, half_life_s: float) -> np.ndarray:
    """float32 [B, n_items]: per query, each item's summed ``engagement weight * decay to the latest event``."""
    log = histories.log
    if math.isinf(half_life_s):
        return histories.matrix(log.weight)
    out = np.zeros((len(histories), log.n_items), np.float32)
    for q, rows in enumerate(histories.rows):
        if rows.size:
            np.add.at(out[q], log.item[rows], row_weights(log, rows, half_life_s))
    return out


@dataclass
class DreamUMMScorer:
    """Scores = <DreamUMM user vector, item vectors>, events weighed by the log's engagement weights."""

    items: np.ndarray            # float32 [n_items, D], unit rows
    popularity: Popularity
    half_life_s: float = float("inf")

    def users(self, histories: Histories) -> np.ndarray:
        """float32 [B, D]: the unit user vectors (zero rows for empty histories)."""
        return normalize(history_weights(histories, self.half_life_s) @ self.items)

    def scores(self, histories: Histories) -> np.ndarray:
        users = self.users(histories)
        out = users @ self.items.T
        empty = ~np.any(users != 0, axis=1)
        out[empty] = self.popularity.counts
        return out


@dataclass
class CandidateBlendScorer:
    """Candidate-DreamUMM as the worker applies it, for a dataset without impressions.

    A brand-new user has no positive play yet; what they were *shown* is the
    only signal. MovieLens records no impressions, so the slate is simulated
    as what a cold user is shown in practice: the ``slate`` most popular
    items of the training past. The served vector is
    :func:`dreamstream.dreamumm_ref.candidate_blend` of the user's own vector
    and that slate's, by confidence ``n_pos / cold_min_positive``, exactly
    as the worker blends.
    """

    served: DreamUMMScorer
    cold_min_positive: int
    slate: int = 50

    def scores(self, histories: Histories) -> np.ndarray:
        from dreamstream.dreamumm_ref import candidate_blend, candidate_vector

        own = self.served.users(histories)
        top = np.argsort(-self.served.popularity.counts, kind="stable")[: self.slate]
        candidates = np.broadcast_to(candidate_vector(self.served.items[top]), own.shape)
        n_pos = np.array([int((histories.log.weight[r] > 0).sum()) for r in histories.rows])
        blended, _ = candidate_blend(own, candidates, n_pos, self.cold_min_positive)
        return blended @ self.served.items.T
