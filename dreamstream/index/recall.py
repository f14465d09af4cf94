"""Recall@k of an approximate index against exact search, on a sample of queries.

Why measure instead of trusting nprobe: recall depends on the data's
clustering, which moves as the catalogue changes; a version is only worth
publishing if its measured recall clears the floor.
"""
from __future__ import annotations

import faiss
import numpy as np


def sample_queries(vectors: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Queries that look like retrieval queries, none of them a stored item.

    Half are stored items pushed off by isotropic noise as large as the item
    (a new point near the catalogue, as a user vector is), half are unit
    mixes of two items (between clusters, as blended interests are). Stored
    items themselves would always find themselves and overstate recall.
    """
    rng = np.random.default_rng(seed)
    n = max(2, min(n, len(vectors)))
    dim = vectors.shape[1]
    near = vectors[rng.integers(0, len(vectors), n - n // 2)]
    near = near + rng.standard_normal(near.shape).astype(np.float32) / np.sqrt(dim)
    a = vectors[rng.integers(0, len(vectors), n // 2)]
    b = vectors[rng.integers(0, len(vectors), n // 2)]
    queries = np.vstack([near, a + b])
    queries /= np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(queries, dtype=np.float32)


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The true top-k ids (rows of ``vectors``) by inner product."""
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    return flat.search(queries, k)[1]


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's true top-k that the approximate top-k contains."""
    k = truth.shape[1]
    hits = sum(len(np.intersect1d(f[f >= 0], t[t >= 0])) for f, t in zip(found, truth))
    return hits / max(1, truth.shape[0] * k)
