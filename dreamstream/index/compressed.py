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
exactly, :mod:`dreamstream.index.rerank`). No nprobe under the fewest lists
whose exact scan would reach the floor can work; from there up, each nprobe
gets the shortest list that reaches the floor, and the pair that serves a
user search fastest (timed on the sample) wins.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import faiss
import numpy as np

from dreamstream.index.recall import exact_neighbours, recall_at_k, sample_queries, smallest_nprobe
from dreamstream.index.rerank import rerank_rows, search_reranked, short_list_length

COMPRESSED_KINDS = ("ivf-pq", "ivf-pq8", "opq-pq", "ivf-sq8")  # also in manifest.SHARD_KINDS (the manifest parser imports no Faiss)
KINDS = ("ivf-flat",) + COMPRESSED_KINDS
SHORT_LISTS = (2, 4, 6, 8, 12, 16, 24, 32)  # candidates per wanted item tried at build time, fewest first
PROBE_STEPS = (1.0, 1.15, 1.3, 1.6, 2.0, 3.0)  # nprobe tried, as multiples of the fewest lists that can reach the floor


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
    neighbours = to_ivf_space(index, vectors[truth.reshape(-1)])  # only the true neighbours' lists matter
    renumbered = np.arange(truth.size).reshape(truth.shape)
    least = smallest_nprobe(ivf, neighbours, to_ivf_space(index, queries), renumbered, recall_floor, max_nprobe)
    probes = (nprobe,) if nprobe else sorted({min(max_nprobe, max(1, round(least * step))) for step in PROBE_STEPS})
    shorts = (short_list,) if short_list else SHORT_LISTS
    fastest: tuple[float, int, int, float] | None = None  # (seconds, nprobe, short list, recall)
    best_recall = (-1.0, probes[-1], shorts[-1])
    for probe in probes:
        ivf.nprobe = probe
        for short, recall in zip(shorts, recall_by_short_list(index, vectors, queries, truth, shorts)):
            best_recall = max(best_recall, (recall, probe, short))
            if recall >= recall_floor:
                seconds = _search_seconds(index, vectors, queries, short)
                if fastest is None or seconds < fastest[0]:
                    fastest = (seconds, probe, short, recall)
                break  # a longer short list at this nprobe only costs more
    if fastest is None:  # the floor is out of reach: report the best recall seen (the version will not be published)
        recall, probe, short = best_recall
    else:
        _, probe, short, recall = fastest
    ivf.nprobe = probe
    return CompressedShard(index, recall, int(probe), short)


def recall_by_short_list(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray,
                         shorts: tuple[int, ...]) -> list[float]:
    """Recall@k after re-ranking for each short list, from one search: a shorter list is a prefix of the longest."""
    k = truth.shape[1]
    _, rows = index.search(queries, min(index.ntotal, short_list_length(k, max(shorts))))
    return [recall_at_k(rerank_rows(vectors, queries, rows[:, :short_list_length(k, short)], k)[1], truth) for short in shorts]


def _search_seconds(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, short: int, k: int = 50) -> float:
    """Seconds to serve 10 user searches (5 queries each, top ``k``) at the index's nprobe: the best of 3 rounds.

    Measured rather than modelled: which of (more lists, longer short list)
    costs less depends on the list sizes, the code kind and the CPU.
    """
    rounds = []
    for _ in range(3):
        started = time.perf_counter()
        for first in range(0, min(len(queries), 50), 5):
            search_reranked(index, vectors, queries[first:first + 5], k, short)
        rounds.append(time.perf_counter() - started)
    return min(rounds)
