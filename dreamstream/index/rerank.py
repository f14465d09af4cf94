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

MEASURED_K = 10  # the build tunes ``short_list`` at k = 10 (builder.RECALL_K); a smaller k keeps that list length


def search_reranked(index: faiss.Index, vectors: np.ndarray | None, queries: np.ndarray, k: int,
                    short_list: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` (scores [Q,k] exact, rows [Q,k]; -1 / -inf where the shard ran out) of one shard.

    ``vectors`` None (an uncompressed shard): the index's own scores, as before.
    """
    if vectors is None or short_list <= 1:
        return index.search(queries, k)
    fetch = min(index.ntotal, short_list * max(k, MEASURED_K))
    _, rows = index.search(queries, fetch)
    valid = rows >= 0
    exact = np.full(rows.shape, -np.inf, np.float32)
    stored = vectors.view(np.ndarray)[rows[valid]]  # plain ndarray indexing: np.memmap's per-call overhead is not free
    exact[valid] = np.einsum("nd,nd->n", queries[np.nonzero(valid)[0]], stored)
    order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    top_rows = np.take_along_axis(rows, order, 1)
    top_scores = np.take_along_axis(exact, order, 1)
    return top_scores, np.where(np.isfinite(top_scores), top_rows, -1)
