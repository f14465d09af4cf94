"""Full-catalogue top-k ranking and the design's metrics: Recall, NDCG, HitRate @10/20/50.

Why full sort (no sampled negatives): sampled metrics reorder models
(Krichene & Rendle, KDD 2020), and the catalogue here is small enough to
score every item for every user in batches. One held-out item per user (the
leave-last-out target), so Recall@k and HitRate@k are the same number; both
are reported because the papers report both. numpy only, shared by
``evaluate`` and the tests.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

KS = (10, 20, 50)


def full_sort_topk(user_vecs: np.ndarray, item_vecs: np.ndarray, exclude: Sequence[np.ndarray], k: int,
                   batch: int = 1024) -> np.ndarray:
    """int64 [U, k]: each user's k best items by inner product, excluded items never returned.

    ``exclude[u]`` holds the item indexes to mask for user ``u`` (their
    training history). Ties are broken by the lower item index, so a run is
    reproducible. When fewer than ``k`` items remain, the row is padded with -1.
    """
    user_vecs = np.asarray(user_vecs, dtype=np.float32)
    item_vecs = np.asarray(item_vecs, dtype=np.float32)
    n_users, n_items = user_vecs.shape[0], item_vecs.shape[0]
    if len(exclude) != n_users:
        raise ValueError(f"exclude has {len(exclude)} lists for {n_users} users; give one (possibly empty) per user")
    if user_vecs.shape[1] != item_vecs.shape[1]:
        raise ValueError(f"user vectors are {user_vecs.shape[1]}-d but item vectors {item_vecs.shape[1]}-d")
    out = np.full((n_users, k), -1, dtype=np.int64)
    for lo in range(0, n_users, batch):
        hi = min(lo + batch, n_users)
        out[lo:hi] = topk_of_scores(user_vecs[lo:hi] @ item_vecs.T, exclude[lo:hi], k)
    return out


def topk_of_scores(scores: np.ndarray, exclude: Sequence[np.ndarray], k: int) -> np.ndarray:
    """int64 [B, k]: the k best columns of a score matrix [B, n_items] per row, ``exclude[b]`` masked.

    Modifies ``scores`` in place (masked entries become -inf). Ties go to the
    lower item index; rows with fewer than ``k`` unmasked items are padded with -1.
    """
    k_eff = min(k, scores.shape[1])
    out = np.full((scores.shape[0], k), -1, dtype=np.int64)
    rows, cols = _mask_index(exclude)
    scores[rows, cols] = -np.inf
    out[:, :k_eff] = _topk_rows(scores, k_eff)
    # items that were masked may have been picked when too few were left: drop them
    out[:, :k_eff][np.take_along_axis(scores, out[:, :k_eff], axis=1) == -np.inf] = -1
    return out


def _mask_index(exclude: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(e) for e in exclude), dtype=np.int64, count=len(exclude))
    rows = np.repeat(np.arange(len(exclude)), lengths)
    cols = np.concatenate([np.asarray(e, dtype=np.int64) for e in exclude]) if lengths.sum() else np.zeros(0, np.int64)
    return rows, cols


def _topk_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Indexes of the k largest scores per row, best first, ties to the lower index."""
    n = scores.shape[1]
    if k < n:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        # an item tied with the k-th score outside the partition: redo those rows exactly
        kth = np.take_along_axis(scores, part, axis=1).min(axis=1)
        ties = (scores == kth[:, None]).sum(axis=1) > (np.take_along_axis(scores, part, axis=1) == kth[:, None]).sum(axis=1)
        if ties.any():
            full = np.lexsort((np.broadcast_to(np.arange(n), scores[ties].shape), -scores[ties]), axis=1)[:, :k]
            part[ties] = full
    else:
        part = np.broadcast_to(np.arange(n), scores.shape).copy()
    picked = np.take_along_axis(scores, part, axis=1)
    rank = np.lexsort((part, -picked), axis=1)
    return np.take_along_axis(part, rank, axis=1)


def topk_metrics(topk: np.ndarray, targets: np.ndarray, ks: Iterable[int] = KS) -> dict[str, float]:
    """Recall, NDCG and HitRate at each k, averaged over users; one target item per user.

    NDCG with a single relevant item is ``1 / log2(rank + 2)`` (rank 0-based)
    when it is in the top k, else 0 (the ideal DCG is 1).
    """
    topk = np.asarray(topk)
    targets = np.asarray(targets, dtype=np.int64)
    if topk.shape[0] != targets.shape[0] or topk.shape[0] == 0:
        raise ValueError(f"need one target per ranked user and at least one user; got {topk.shape[0]} ranked "
                         f"users and {targets.shape[0]} targets")
    ks = tuple(ks)
    if max(ks) > topk.shape[1]:
        raise ValueError(f"top-k lists have {topk.shape[1]} items, too few for @{max(ks)}; rank with k >= {max(ks)}")
    hit = topk == targets[:, None]  # [U, K]; at most one True per row
    rank = np.where(hit.any(axis=1), hit.argmax(axis=1), topk.shape[1])
    out: dict[str, float] = {}
    for k in ks:
        within = rank < k
        gain = np.where(within, 1.0 / np.log2(np.minimum(rank, k) + 2.0), 0.0)
        out[f"recall@{k}"] = float(within.mean())
        out[f"ndcg@{k}"] = float(gain.mean())
        out[f"hitrate@{k}"] = float(within.mean())
    return out


def popularity_topk(train_items: np.ndarray, n_items: int, exclude: Sequence[np.ndarray], k: int) -> np.ndarray:
    """The popularity baseline: every user gets the most-interacted training items they have not seen."""
    counts = np.bincount(np.asarray(train_items, dtype=np.int64), minlength=n_items).astype(np.float32)
    ones = np.ones((len(exclude), 1), dtype=np.float32)
    return full_sort_topk(ones, counts[:, None], exclude, k)
