"""Recall@k of an approximate index against exact search, on a sample of queries.

Why measure instead of trusting nprobe: recall depends on the data's
clustering, which moves as the catalogue changes; a version is only worth
publishing if its measured recall clears the floor.
"""
from __future__ import annotations

import faiss
import numpy as np


def sample_queries(vectors: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Queries that look like retrieval queries: half stored items, half unit mixes of two items.

    Mixes sit between clusters, as user and interest vectors do, which is
    where an IVF index loses the most recall.
    """
    rng = np.random.default_rng(seed)
    n = min(n, len(vectors))
    own = vectors[rng.choice(len(vectors), n - n // 2, replace=False)]
    a = vectors[rng.integers(0, len(vectors), n // 2)]
    b = vectors[rng.integers(0, len(vectors), n // 2)]
    mixed = a + b
    mixed /= np.maximum(np.linalg.norm(mixed, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(np.vstack([own, mixed]), dtype=np.float32)


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
