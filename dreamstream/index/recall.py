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


def smallest_nprobe(ivf: faiss.IndexIVF, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, floor: float, max_nprobe: int) -> int:
    """The fewest lists to probe for recall@k >= ``floor``, for every nprobe at once.

    An IVF-Flat search ranks the scanned lists exactly, so a true neighbour
    is found iff its list is among the query's ``nprobe`` nearest centroids:
    recall(nprobe) is the share of true neighbours whose list ranks below
    nprobe. One centroid ranking replaces a search per candidate nprobe.
    Capped at ``max_nprobe`` (a quarter of the lists): past that an exact
    index is the honest choice, so the build reports the low recall instead.
    """
    nlist = ivf.nlist
    _, centroid_order = ivf.quantizer.search(queries, nlist)  # [Q, nlist] best list first
    rank = np.empty_like(centroid_order)
    np.put_along_axis(rank, centroid_order, np.arange(nlist)[None, :].repeat(len(queries), 0), axis=1)
    _, home = ivf.quantizer.search(vectors[truth.reshape(-1)], 1)  # list of each true neighbour
    needed = np.take_along_axis(rank, home.reshape(truth.shape), axis=1).reshape(-1) + 1
    share = np.cumsum(np.bincount(needed, minlength=nlist + 1)) / needed.size  # recall if nprobe = index
    reaching = np.flatnonzero(share >= floor)
    return int(min(reaching[0], max_nprobe)) if reaching.size else max_nprobe
