"""DreamUMM user vector from a history, in numpy: the reference the stream worker must match.

DreamUMM (arXiv 2410.03538) puts the user at the point of the item space that
best aligns with what they engaged with. With engagement weights ``r_i`` and
time decay, that point has a closed form kept incrementally per event::

    s <- g * s + r * v        g = 0.5 ** (dt / half_life),  dt = ts - last_ts (clamped >= 0)
    u  = s / |s|

The first event of a history has no predecessor: its decay is irrelevant
(the state is zero). Weights and decay come from :mod:`dreamstream.engagement`,
the same functions the worker calls, so offline and streamed vectors are the
same numbers.

Candidate-DreamUMM (cold start), :func:`candidate_blend`: while a user has
fewer than ``cold_min_positive`` positive events, their vector is pulled
towards the videos they were shown (impressed candidates)::

    c    = n_pos / cold_min_positive           (confidence in the user's own state, in [0, 1))
    cand = normalize(sum_j w_j * v_j)          (impressed candidates, w_j = impression weight)
    u    = normalize(c * u_own + (1 - c) * cand)

A user with no positive event is their candidates' direction; from
``cold_min_positive`` positives on they are their own state. When either
side is missing (zero), the other is used alone. torch-free: the worker,
``evaluate`` and the demo import it; ``models.dreamumm`` calls it too.
"""
from __future__ import annotations

import numpy as np

from dreamstream.engagement import decay

EPS = 1e-12


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit norm; zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(norm > EPS, x / np.maximum(norm, EPS), 0.0).astype(np.float32)


def step(state: np.ndarray, item: np.ndarray, weight: np.ndarray | float, g: np.ndarray | float
         ) -> tuple[np.ndarray, np.ndarray]:
    """One DreamUMM update, batched: ``state_out = g*state + weight*item``; returns (state_out, unit user).

    Same maths as ``dreamumm_step.onnx``; shapes state/item [B, D], weight/g [B, 1] (or broadcastable).
    """
    out = (np.asarray(g, np.float32) * np.asarray(state, np.float32)
           + np.asarray(weight, np.float32) * np.asarray(item, np.float32)).astype(np.float32)
    return out, normalize(out)


def decays(ts_ms: np.ndarray, half_life_s: float) -> np.ndarray:
    """Per event, the decay applied to the state *before* adding it: 1 for the first, then by gap."""
    ts = np.asarray(ts_ms, dtype=np.float64)
    gaps = np.diff(ts, prepend=ts[:1]) if ts.size else ts
    return decay(gaps, half_life_s)


def user_vector(item_vecs: np.ndarray, weights: np.ndarray, ts_ms: np.ndarray | None = None,
                half_life_s: float = float("inf"), state: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """(state [D], unit user vector [D]) after applying a history's events in order.

    ``item_vecs`` [n, D], ``weights`` [n], ``ts_ms`` [n] event times (ignored
    when the half-life is infinite). Applies the events one by one, exactly
    as the worker does, so float32 rounding matches too. An empty history
    gives the zero vector.
    """
    item_vecs = np.asarray(item_vecs, dtype=np.float32)
    s = np.zeros(item_vecs.shape[-1], np.float32) if state is None else np.asarray(state, np.float32).copy()
    if len(item_vecs) == 0:
        return s, normalize(s)
    g = decays(ts_ms, half_life_s) if ts_ms is not None else np.ones(len(item_vecs), np.float32)
    w = np.asarray(weights, dtype=np.float32)
    for v, wi, gi in zip(item_vecs, w, g):
        s = (np.float32(gi) * s + np.float32(wi) * v).astype(np.float32)
    return s, normalize(s)


def candidate_vector(candidate_vecs: np.ndarray, weights: np.ndarray | float = 1.0) -> np.ndarray:
    """Normalised weighted sum of impressed candidates' vectors [D] (zero when there are none)."""
    c = np.asarray(candidate_vecs, dtype=np.float32)
    if c.size == 0:
        return np.zeros(c.shape[-1] if c.ndim == 2 else 0, np.float32)
    w = np.broadcast_to(np.asarray(weights, np.float32), (c.shape[0],))
    return normalize((w[:, None] * c).sum(axis=0))


def confidence(n_positive: np.ndarray | int, cold_min_positive: int) -> np.ndarray:
    """``c = min(n_pos / cold_min_positive, 1)``: 1 (own state only) when the threshold is 0."""
    n = np.asarray(n_positive, dtype=np.float32)
    if cold_min_positive <= 0:
        return np.ones_like(n)
    return np.clip(n / np.float32(cold_min_positive), 0.0, 1.0).astype(np.float32)


def candidate_blend(user: np.ndarray, candidates: np.ndarray, n_positive: np.ndarray | int,
                    cold_min_positive: int) -> tuple[np.ndarray, np.ndarray]:
    """(blended unit vector, cold flag): ``normalize(c*user + (1-c)*candidates)`` while cold.

    ``user`` and ``candidates`` are unit (or zero) vectors [..., D], batched
    alike; ``candidates`` is :func:`candidate_vector`'s output (or a running
    normalised sum kept by the worker). Cold = fewer than
    ``cold_min_positive`` positive events. A warm user is returned unchanged.
    """
    user = np.asarray(user, np.float32)
    candidates = np.asarray(candidates, np.float32)
    c = confidence(n_positive, cold_min_positive)[..., None]
    cold = np.asarray(n_positive) < cold_min_positive
    user_has = np.linalg.norm(user, axis=-1, keepdims=True) > EPS
    cand_has = np.linalg.norm(candidates, axis=-1, keepdims=True) > EPS
    c = np.where(~cand_has, 1.0, np.where(~user_has, 0.0, c)).astype(np.float32)
    blended = normalize(c * user + (1.0 - c) * candidates)
    return np.where(cold[..., None], blended, user).astype(np.float32), cold


# Item-side DreamUMM: a new video's vector refined by its live watchers (docs/evaluation.md, "Live refinement of the
# new films' vectors"). Chosen on the validation window only (ml-100k-dev, development cold-item protocol, DREAM seeds
# 0-2): the best of 134 live settings by all-events HitRate@20 on the window's first half. The served defaults of
# DREAMSTREAM_LIVE_BETA0 / DREAMSTREAM_LIVE_GAMMA.
LIVE_BETA0 = 0.4  # how far below the tower a video with no watcher starts, along m_user
LIVE_GAMMA = 0.1  # how far each watcher's unit user vector pulls it


def refined_vector(tower: np.ndarray, m_user: np.ndarray, watcher_sum: np.ndarray, beta0: float = LIVE_BETA0,
                   gamma: float = LIVE_GAMMA) -> np.ndarray:
    """A new video's vector after its watchers so far: ``normalize(tower - beta0 * m_user + gamma * watcher_sum)``.

    ``tower`` [..., D] (the item tower's vector), ``m_user`` [D] (zeros when
    the bundle has none: no push down), ``watcher_sum`` [..., D] (the sum of
    the watchers' engagement-weighted unit user vectors; zeros before the
    first watcher); broadcasts, float32 unit rows out. ``-beta0 * m_user``
    keeps a video nobody has watched from crowding everyone's top-k; each
    watcher pulls it towards the users who watch it. The one formula both
    the evaluation and the streaming refiner (``streams.item_refiner``) use.
    """
    return normalize(np.asarray(tower, np.float64) - beta0 * np.asarray(m_user, np.float64)
                     + gamma * np.asarray(watcher_sum, np.float64))


def mean_user_direction(users: np.ndarray) -> np.ndarray:
    """``m_user``: the unit mean of served user vectors [M, D] (the training log's, as ``served_examples`` gives them).

    In the trained space an item's component along it ranks the item's
    popularity; ``beta0`` takes a new video's share of it away until watchers earn it back.
    """
    m = np.asarray(users, np.float32).mean(axis=0)
    return (m / np.linalg.norm(m)).astype(np.float32)
