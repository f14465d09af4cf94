"""Building index versions: one Faiss index per shard, chosen by the shard's size.

Small shards get an exact ``IndexFlatIP``; past ``exact_max`` items a shard
gets an ``IndexIVFFlat`` (spherical k-means, inner product) whose ``nprobe``
is tuned at build time to the smallest value whose recall@10 against
exact search clears the floor on a sample of queries. ``nprobe`` is stored in the index
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
from tqdm import tqdm

from dreamstream.checksums import inside
from dreamstream.index.layout import BUILDING_PREFIX
from dreamstream.index.manifest import Manifest, ShardEntry, fsync_dir, sha256_bytes, write_bytes_synced, write_manifest
from dreamstream.index.recall import exact_neighbours, recall_at_k, sample_queries
from dreamstream.index.sharding import ids_file, shard_file
from dreamstream.index.store import ItemStore

log = logging.getLogger(__name__)

METRIC = "inner_product"
RECALL_K = 10


@dataclass(frozen=True)
class BuildParams:
    """How shards are built; zeros mean "choose from the shard's size"."""

    exact_max: int = 200_000
    recall_floor: float = 0.95
    nlist: int = 0  # IVF lists; 0 = about 2 sqrt(n) (measured: finer lists beat more probes at 250k/shard)
    nprobe: int = 0  # 0 = the smallest that reaches the floor on the sample (at most nlist / 4)
    train_per_list: int = 40  # k-means training points per list
    kmeans_iters: int = 10
    recall_queries: int = 400  # 4,000 hits: recall known to about +-0.005
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
    nlist = params.nlist or max(16, int(round(2 * math.sqrt(n))))
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
    max_nprobe = max(1, nlist // 4)
    ivf.nprobe = params.nprobe or smallest_nprobe(ivf, vectors, queries, truth, params.recall_floor, max_nprobe)
    recall = recall_at_k(ivf.search(queries, RECALL_K)[1], truth)  # the number published is measured, not predicted
    for _ in range(3 if not params.nprobe else 0):  # score ties can cost a hair of the predicted recall
        if recall >= params.recall_floor or ivf.nprobe >= max_nprobe:
            break
        ivf.nprobe = min(max_nprobe, int(ivf.nprobe * 1.1) + 1)
        recall = recall_at_k(ivf.search(queries, RECALL_K)[1], truth)
    return BuiltShard(ivf, "ivf", recall, ivf.nprobe)


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


def new_version_name(index_dir: Path) -> str:
    """A sortable, unique version folder name (UTC time to the microsecond)."""
    while True:
        now = time.time()
        name = time.strftime("v%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
        if not (index_dir / name).exists() and not (index_dir / f"{BUILDING_PREFIX}{name}").exists():
            return name
        time.sleep(1e-3)


def build_version(
    store: ItemStore,
    index_dir: Path,
    params: BuildParams,
    rebuild: set[int] | None = None,
    previous: Manifest | None = None,
    space: str = "",
    progress: bool = False,
    interests: int = 0,
) -> BuiltVersion:
    """Write every shard of a new version into a temporary folder and fsync it.

    ``rebuild`` names the shards whose items changed since ``previous``; the
    others are linked from it. With no usable previous version every shard
    is built. ``interests`` is the namespace's bundle's K (0: not known),
    the most interests a reader searches per record in this version.
    """
    started = time.perf_counter()
    if params.threads:
        faiss.omp_set_num_threads(params.threads)
    index_dir.mkdir(parents=True, exist_ok=True)
    name = new_version_name(index_dir)
    folder = index_dir / f"{BUILDING_PREFIX}{name}"
    folder.mkdir()
    reusable = previous is not None and len(previous.shards) == store.shards and previous.dim == store.dim
    entries: list[ShardEntry] = []
    rebuilt: list[int] = []
    for shard in tqdm(range(store.shards), desc="build shards", unit="shard", disable=not progress):
        if reusable and rebuild is not None and shard not in rebuild:
            try:
                entries.append(_reuse_shard(index_dir / previous.version, folder, previous.shards[shard]))
                continue
            except (OSError, ValueError) as err:  # the previous version's files are gone or hostile: build it afresh
                log.warning("shard %d not reused from %s (%s); building it", shard, previous.version, err)
        entries.append(_write_shard(store, shard, folder, params))
        rebuilt.append(shard)
    manifest = Manifest(
        version=name,
        space=space,
        dim=int(store.dim or 0),
        metric=METRIC,
        shards=entries,
        items=sum(e.count for e in entries),
        recall=min(e.recall for e in entries),
        built_at=time.time(),
        build_s=round(time.perf_counter() - started, 3),
        rebuilt=rebuilt,
        interests=interests,
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
        source_file, target = inside(source, name), inside(folder, name)  # names from a manifest stay in their folders
        target.unlink(missing_ok=True)
        try:
            os.link(source_file, target)
        except OSError:
            shutil.copy2(source_file, target)
            with open(target, "rb") as fh:
                os.fsync(fh.fileno())
    return entry
