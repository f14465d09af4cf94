"""Exact re-ranking of a compressed shard's short list: approximate codes choose, exact vectors decide.

A product-quantised score is off by a few hundredths, enough to swap
neighbours near the k-th place; fetching ``short_list`` times ``k``
candidates from the codes and ranking them by the exact inner product with
the stored float32 vectors (:mod:`dreamstream.index.shard_vectors`) gives
back what quantisation lost. The same function tunes the short list at
build time and serves it in the client, so the recall the manifest
publishes is the recall readers get.
"""
from __future__ import annotations

import faiss
import numpy as np

MEASURED_K = 10  # the build tunes ``short_list`` at k = 10 (builder.RECALL_K)


def search_reranked(index: faiss.Index, vectors: np.ndarray | None, queries: np.ndarray, k: int,
                    short_list: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` (scores [Q,k] exact, rows [Q,k]; -1 / -inf where the shard ran out) of one shard.

    ``vectors`` None (an uncompressed shard): the index's own scores, as before.
    """
    if vectors is None or short_list <= 1:
        return index.search(queries, k)
    _, rows = index.search(queries, min(index.ntotal, short_list_length(k, short_list)))
    return rerank_rows(vectors, queries, rows, k)


def short_list_length(k: int, short_list: int) -> int:
    """Candidates re-ranked for a top ``k``: ``short_list`` x 10 at k <= 10 (what the build measured), plus one per item beyond.

    Why not ``short_list`` x k: the candidates a short list must add are the
    items the codes misplace across the k-th place, and how far codes
    misplace an item depends on the score gaps near that place, not on k.
    A top 50 with the factor of a top 10 would re-rank 5x the rows for the
    same slack (bench-index measures the served recall this gives at k = 20).
    """
    return max(k, MEASURED_K) + (short_list - 1) * MEASURED_K


def rerank_rows(vectors: np.ndarray, queries: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` of each query's candidate ``rows`` [Q,R] (-1 = none) with the highest exact inner product."""
    valid = rows >= 0
    stored = vectors.view(np.ndarray)[np.where(valid, rows, 0)]  # [Q,R,D]; plain ndarray: np.memmap's per-call overhead is not free
    exact = np.where(valid, np.einsum("qrd,qd->qr", stored, queries), -np.inf).astype(np.float32)
    order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    top_rows = np.take_along_axis(rows, order, 1)
    top_scores = np.take_along_axis(exact, order, 1)
    return top_scores, np.where(np.isfinite(top_scores), top_rows, -1)
