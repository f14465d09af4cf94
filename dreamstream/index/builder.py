"""Building index versions: one Faiss index per shard, chosen by the shard's size.

Small shards get an exact ``IndexFlatIP``; past ``exact_max`` items a shard
gets an ``IndexIVFFlat`` (spherical k-means, inner product) whose ``nprobe``
is tuned at build time to the smallest value whose measured recall@10
against exact search clears the floor. ``nprobe`` is stored in the index
file, so readers search exactly as the build measured.

Shards whose items did not change are not rebuilt: their files are
hard-linked from the previous version (copied across file systems). A
published version is never written to, so sharing inodes is safe.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from dreamstream.index.manifest import Manifest, ShardEntry, fsync_dir, sha256_bytes, write_bytes_synced, write_manifest
from dreamstream.index.recall import exact_neighbours, recall_at_k, sample_queries
from dreamstream.index.sharding import ids_file, shard_file
from dreamstream.index.store import ItemStore

log = logging.getLogger(__name__)

METRIC = "inner_product"
RECALL_K = 10
NPROBE_LADDER = (4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)


@dataclass(frozen=True)
class BuildParams:
    """How shards are built; zeros mean "choose from the shard's size"."""

    exact_max: int = 200_000
    recall_floor: float = 0.95
    nlist: int = 0  # IVF lists; 0 = about sqrt(n)
    nprobe: int = 0  # 0 = smallest of NPROBE_LADDER that reaches the floor (at most nlist / 4)
    train_per_list: int = 40  # k-means training points per list
    kmeans_iters: int = 10
    recall_queries: int = 500
    threads: int = 0  # Faiss OpenMP threads; 0 = Faiss' default


@dataclass(frozen=True)
class BuiltShard:
    index: faiss.Index
    kind: str
    recall: float
    nprobe: int


@dataclass(frozen=True)
class BuiltVersion:
    """A complete, fsynced version in a temporary folder, not yet visible to readers."""

    folder: Path
    manifest: Manifest


def build_shard(vectors: np.ndarray, params: BuildParams) -> BuiltShard:
    """The Faiss index of one shard's unit vectors, with its measured recall@10."""
    n, dim = vectors.shape
    if n <= params.exact_max:
        flat = faiss.IndexFlatIP(dim)
        if n:
            flat.add(vectors)
        return BuiltShard(flat, "flat" if n else "empty", 1.0, 0)
    return _build_ivf(vectors, params)


def _build_ivf(vectors: np.ndarray, params: BuildParams) -> BuiltShard:
    n, dim = vectors.shape
    nlist = params.nlist or max(16, int(round(math.sqrt(n))))
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.spherical = True
    ivf.cp.niter = params.kmeans_iters
    ivf.cp.max_points_per_centroid = params.train_per_list
    rng = np.random.default_rng(n)
    train = vectors[np.sort(rng.choice(n, min(n, nlist * params.train_per_list), replace=False))]
    ivf.train(train)
    ivf.add(vectors)

    queries = sample_queries(vectors, params.recall_queries, seed=n)
    truth = exact_neighbours(vectors, queries, RECALL_K)
    ladder = [params.nprobe] if params.nprobe else [p for p in NPROBE_LADDER if p <= max(1, nlist // 4)] or [1]
    recall = 0.0
    for nprobe in ladder:
        ivf.nprobe = nprobe
        recall = recall_at_k(ivf.search(queries, RECALL_K)[1], truth)
        if recall >= params.recall_floor:
            break
    return BuiltShard(ivf, "ivf", recall, ivf.nprobe)


def new_version_name(index_dir: Path) -> str:
    """A sortable, unique version folder name (UTC time to the microsecond)."""
    while True:
        now = time.time()
        name = time.strftime("v%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
        if not (index_dir / name).exists() and not (index_dir / f".building-{name}").exists():
            return name
        time.sleep(1e-3)


def build_version(
    store: ItemStore,
    index_dir: Path,
    params: BuildParams,
    rebuild: set[int] | None = None,
    previous: Manifest | None = None,
) -> BuiltVersion:
    """Write every shard of a new version into a temporary folder and fsync it.

    ``rebuild`` names the shards whose items changed since ``previous``; the
    others are linked from it. With no usable previous version every shard
    is built.
    """
    started = time.perf_counter()
    if params.threads:
        faiss.omp_set_num_threads(params.threads)
    index_dir.mkdir(parents=True, exist_ok=True)
    name = new_version_name(index_dir)
    folder = index_dir / f".building-{name}"
    folder.mkdir()
    reusable = previous is not None and len(previous.shards) == store.shards and previous.dim == store.dim
    entries: list[ShardEntry] = []
    rebuilt: list[int] = []
    for shard in range(store.shards):
        if reusable and rebuild is not None and shard not in rebuild:
            entries.append(_reuse_shard(index_dir / previous.version, folder, previous.shards[shard]))
            continue
        entries.append(_write_shard(store, shard, folder, params))
        rebuilt.append(shard)
    manifest = Manifest(
        version=name,
        dim=int(store.dim or 0),
        metric=METRIC,
        shards=entries,
        items=sum(e.count for e in entries),
        recall=min(e.recall for e in entries),
        built_at=time.time(),
        build_s=round(time.perf_counter() - started, 3),
        rebuilt=rebuilt,
    )
    write_manifest(folder, manifest)
    fsync_dir(folder)
    log.info("built version=%s items=%d rebuilt=%s recall=%.4f build_s=%.2f", name, manifest.items, rebuilt, manifest.recall, manifest.build_s)
    return BuiltVersion(folder, manifest)


def _write_shard(store: ItemStore, shard: int, folder: Path, params: BuildParams) -> ShardEntry:
    ids, vectors = store.shard(shard)
    built = build_shard(np.ascontiguousarray(vectors, dtype=np.float32), params)
    index_bytes = faiss.serialize_index(built.index).tobytes()
    ids_bytes = json.dumps(ids, separators=(",", ":")).encode("utf-8")
    write_bytes_synced(folder / shard_file(shard), index_bytes)
    write_bytes_synced(folder / ids_file(shard), ids_bytes)
    return ShardEntry(
        file=shard_file(shard),
        ids=ids_file(shard),
        count=len(ids),
        sha256=sha256_bytes(index_bytes),
        ids_sha256=sha256_bytes(ids_bytes),
        kind=built.kind,
        recall=round(built.recall, 5),
        nprobe=built.nprobe,
    )


def _reuse_shard(source: Path, folder: Path, entry: ShardEntry) -> ShardEntry:
    """Share an unchanged shard's files with the previous version (hard link, else copy)."""
    for name in (entry.file, entry.ids):
        try:
            os.link(source / name, folder / name)
        except OSError:
            shutil.copy2(source / name, folder / name)
            with open(folder / name, "rb") as fh:
                os.fsync(fh.fileno())
    return entry
