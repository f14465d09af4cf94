"""Merging the candidates of several query vectors into one ranked list.

A user is searched with its DreamUMM vector and each OPAL interest vector.
Raw max-score merging lets one dominant interest take every slot, which is
exactly the diversity multi-interest retrieval exists to keep; so each query
gets a quota of the ``k`` slots in proportion to its weight (the user vector's
share, then ``interest_weights`` for the rest), the quotas are filled with the
query's best unseen candidates, leftover slots go to the best remaining
candidates of any query, and the result is ordered by score. Used by the
offline evaluation and by :mod:`dreamstream.client`, so both rank alike.
"""
from __future__ import annotations

from typing import Hashable, Iterable, Sequence

import numpy as np


def query_weights(interest_weights: Sequence[float], user_share: float) -> np.ndarray:
    """Weights of [user vector, interest 0, ..., interest K-1], summing to 1."""
    w = np.asarray(interest_weights, dtype=np.float64)
    w = w / w.sum() if w.size and w.sum() > 0 else np.full(w.size, 1.0 / max(w.size, 1))
    if w.size == 0:
        return np.ones(1)
    return np.concatenate([[user_share], (1.0 - user_share) * w])


def quotas(weights: np.ndarray, k: int) -> np.ndarray:
    """Integer slot counts proportional to ``weights`` that add up to ``k`` (largest remainder)."""
    raw = np.asarray(weights, dtype=np.float64) * k
    base = np.floor(raw).astype(int)
    order = np.argsort(-(raw - base), kind="stable")
    base[order[: k - base.sum()]] += 1
    return base


def merge_by_score(
    ids: Sequence[Sequence[Hashable]],
    scores: Sequence[Sequence[float]],
    weights: np.ndarray,
    k: int,
    exclude: Iterable[Hashable] = (),
) -> list[tuple[Hashable, float]]:
    """Merge per-query ranked lists (``ids[q]``, ``scores[q]``, best first) into the top ``k``.

    An item found by several queries keeps its best score and counts once.
    Items in ``exclude`` (e.g. the user's recent videos) never appear.
    """
    taken: dict[Hashable, float] = {}
    blocked = set(exclude)
    leftovers: list[tuple[float, Hashable]] = []
    for q_ids, q_scores, quota in zip(ids, scores, quotas(weights, k)):
        filled = 0
        for item, score in zip(q_ids, q_scores):
            if item in blocked:
                continue
            if item in taken:
                taken[item] = max(taken[item], float(score))
            elif filled < quota:
                taken[item] = float(score)
                filled += 1
            else:
                leftovers.append((float(score), item))
    for score, item in sorted(leftovers, key=lambda pair: -pair[0]):
        if len(taken) >= k:
            break
        if item not in taken:
            taken[item] = score
    return sorted(taken.items(), key=lambda pair: -pair[1])[:k]
