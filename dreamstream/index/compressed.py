"""Compressed shards: IVF with product- or scalar-quantised codes, tuned for recall after exact re-ranking.

The kinds (``DREAMSTREAM_INDEX_KIND``) and their Faiss factory strings,
codes per item at D=64 (docs/measurements.md, "Compressed index", has the
measured recall / memory / latency curve that chose the default):

* ``ivf-pq``: ``IVF,PQ{D/2}x4fs``, 4-bit PQ codes scanned with SIMD (fast scan), 32 bytes / 2 = 16 B;
* ``ivf-pq8``: ``IVF,PQ{D/4}``, 8-bit PQ codes, 16 B, slower to build and to scan;
* ``opq-pq``: ``OPQ{D/4},IVF,PQ{D/4}``, a learned rotation before 8-bit PQ, 16 B;
* ``ivf-sq8``: ``IVF,SQ8``, one byte per dimension, 64 B (nearly exact, over the 80 B client budget with ids).

Every kind also stores each item's 8-byte Faiss id in its inverted list.
Training uses a sample (``train_per_list`` points per list, at least
``pq_train`` for the codebooks), never the whole shard. Two knobs are tuned on sample queries against exact
search: ``nprobe`` (a true neighbour is found only if its list is probed)
and ``short_list`` (how many candidates per wanted item are re-ranked
exactly, :mod:`dreamstream.index.rerank`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import faiss
import numpy as np

from dreamstream.index.recall import exact_neighbours, recall_at_k, sample_queries
from dreamstream.index.rerank import search_reranked

COMPRESSED_KINDS = ("ivf-pq", "ivf-pq8", "opq-pq", "ivf-sq8")
KINDS = ("ivf-flat",) + COMPRESSED_KINDS
SHORT_LISTS = (2, 4, 6, 8, 12, 16, 24, 32)  # candidates per wanted item tried at build time, fewest first


@dataclass(frozen=True)
class CompressedShard:
    index: faiss.Index
    recall: float
    nprobe: int
    short_list: int


def factory_string(kind: str, dim: int, nlist: int) -> str:
    """The Faiss ``index_factory`` description of a compressed kind at this dimension."""
    sub = _subquantizers(dim, 4)
    specs = {
        "ivf-pq": f"IVF{nlist},PQ{_subquantizers(dim, 2)}x4fs",
        "ivf-pq8": f"IVF{nlist},PQ{sub}",
        "opq-pq": f"OPQ{sub},IVF{nlist},PQ{sub}",
        "ivf-sq8": f"IVF{nlist},SQ8",
    }
    if kind not in specs:
        raise ValueError(f"index kind {kind!r} is not one of {', '.join(KINDS)}")
    return specs[kind]


def _subquantizers(dim: int, dims_each: int) -> int:
    """The largest even divisor of ``dim`` giving at least ``dims_each`` dimensions per sub-quantiser (fast scan wants an even count)."""
    for m in range(dim // dims_each, 0, -1):
        if dim % m == 0 and (m % 2 == 0 or m == 1):
            return m
    return 1


def ivf_of(index: faiss.Index) -> faiss.IndexIVF:
    """The IVF layer of a (possibly rotated) index: where nprobe and the lists live."""
    return faiss.extract_index_ivf(index)


def to_ivf_space(index: faiss.Index, x: np.ndarray) -> np.ndarray:
    """``x`` as the IVF layer sees it (after an OPQ rotation, if the index has one)."""
    if isinstance(index, faiss.IndexPreTransform):
        return index.apply_chain(len(x), x)
    return x


def build_compressed(vectors: np.ndarray, kind: str, nlist: int, recall_floor: float, nprobe: int = 0, short_list: int = 0,
                     train_per_list: int = 40, pq_train: int = 65_536, kmeans_iters: int = 10, recall_queries: int = 400,
                     recall_k: int = 10) -> CompressedShard:
    """Train on a sample, add every vector, then tune nprobe and the short list to the recall floor."""
    n, dim = vectors.shape
    index = faiss.index_factory(dim, factory_string(kind, dim, nlist), faiss.METRIC_INNER_PRODUCT)
    ivf = ivf_of(index)
    ivf.cp.spherical = True
    ivf.cp.niter = kmeans_iters
    ivf.cp.max_points_per_centroid = train_per_list
    rng = np.random.default_rng(n)
    sample = min(n, max(nlist * train_per_list, pq_train))
    index.train(vectors[np.sort(rng.choice(n, sample, replace=False))])
    index.add(vectors)

    queries = sample_queries(vectors, recall_queries, seed=n)
    truth = exact_neighbours(vectors, queries, recall_k)
    max_nprobe = max(1, nlist // 4)
    from dreamstream.index.builder import smallest_nprobe  # the list-ranking argument holds for any IVF coarse quantiser

    if not nprobe:
        probe_floor = 1.0 - (1.0 - recall_floor) / 2  # half the miss budget to the lists, half to the codes
        neighbours = to_ivf_space(index, vectors[truth.reshape(-1)])  # only the true neighbours' lists matter
        renumbered = np.arange(truth.size).reshape(truth.shape)
        nprobe = smallest_nprobe(ivf, neighbours, to_ivf_space(index, queries), renumbered, probe_floor, max_nprobe)
    ivf.nprobe = nprobe

    def measured(short: int) -> float:
        return recall_at_k(search_reranked(index, vectors, queries, recall_k, short)[1], truth)

    tried = (short_list,) if short_list else SHORT_LISTS
    recall = 0.0
    for short in tried:
        recall = measured(short)
        if recall >= recall_floor:
            break
    for _ in range(3 if not short_list else 0):  # codes and lists both short: probe more lists
        if recall >= recall_floor or ivf.nprobe >= max_nprobe:
            break
        ivf.nprobe = min(max_nprobe, int(math.ceil(ivf.nprobe * 1.5)))
        recall = measured(short)
    return CompressedShard(index, recall, int(ivf.nprobe), short)
