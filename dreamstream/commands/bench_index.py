"""`dreamstream bench-index`: build time, recall, search latency and memory of the index at catalogue scale.

The catalogue is synthetic but shaped like trained item embeddings: unit
vectors scattered around many topic centres (``--clusters``, ``--noise``;
``--noise`` large gives uniform vectors on the sphere, the worst case for
IVF). Recall is measured end to end: the merged top-10 and top-20 of all shards against
exact search over the whole catalogue, and the served ranking (user vector
+ interests, blended, watched items excluded) against the exact blend over
every item. Client memory is measured in a fresh process (resident and
anonymous bytes added by loading) and accounted (index bytes + packed ids),
per item. ``--history`` collects runs, ``--plot`` draws their curve
(docs/measurements.md, "Compressed index").
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import faiss
import numpy as np

from dreamstream.blend import INTEREST_WEIGHT, blend_scores
from dreamstream.cli_options import settings_options
from dreamstream.client import LoadedVersion, Retriever, rank, user_queries
from dreamstream.codec import vec_to_bin
from dreamstream.index.builder import build_version
from dreamstream.index.recall import recall_at_k
from dreamstream.index.service import build_params, publish_version
from dreamstream.index.sharding import shards_of
from dreamstream.logs import setup_logging
from dreamstream.settings import Settings


def synthetic_catalogue(n: int, dim: int, clusters: int, noise: float, seed: int = 0) -> np.ndarray:
    """``n`` unit vectors around ``clusters`` random centres, generated in blocks to bound memory."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        block = centres[rng.integers(0, clusters, stop - start)]
        block += (noise / np.sqrt(dim)) * rng.standard_normal((stop - start, dim)).astype(np.float32)
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


class CatalogueShards:
    """The synthetic catalogue seen as the builder sees an :class:`ItemStore`: ``shards``, ``dim``, ``shard(i)``.

    Why not an ItemStore: at 10M items its Python ids, row dicts and doubling
    matrices cost ~10 GB on a machine shared by several engineers; here item
    ``v{i}`` is row ``i`` of the one catalogue matrix, and a shard's rows
    are gathered (sorted by id, as the store snapshots them) only while it is built.
    """

    def __init__(self, vectors: np.ndarray, shards: int) -> None:
        self.vectors, self.shards, self.dim = vectors, shards, vectors.shape[1]
        self._of = shards_of((f"v{i}" for i in range(len(vectors))), shards)

    def shard(self, shard: int) -> tuple[list[str], np.ndarray]:
        rows = sorted(np.flatnonzero(self._of == shard).tolist(), key=lambda i: f"v{i}")
        return [f"v{i}" for i in rows], self.vectors[rows]


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def anon_bytes() -> int:
    """Anonymous resident bytes (heap): what a process holds itself, not page cache it maps and shares."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("RssAnon:"))


def reader_rss(index_dir: Path) -> tuple[int, int]:
    """(resident, anonymous) bytes a fresh process adds by loading the index with a Retriever (this process's heap is polluted)."""
    code = (
        "import sys; from dreamstream.commands.bench_index import rss_bytes, anon_bytes; from dreamstream.client import Retriever; "
        "before, anon = rss_bytes(), anon_bytes(); r = Retriever(sys.argv[1], follow=False); "
        "print(rss_bytes() - before, anon_bytes() - anon)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(index_dir)], capture_output=True, text=True, check=True)
    resident, anon = done.stdout.strip().splitlines()[-1].split()
    return int(resident), int(anon)


def accounted_bytes(version: LoadedVersion) -> int:
    """Bytes a reader holds for a version by construction: each index as serialised (codes, ids, centroids), the
    direct map reconstruct needs on IVF-Flat shards, and the packed ids. Memory-mapped vectors are page cache, not counted."""
    total = 0
    for index, ids, exact in zip(version.indexes, version.ids, version.exact):
        total += int(faiss.serialize_index(index).size) + ids.nbytes
        if exact is None and isinstance(index, faiss.IndexIVF):
            total += 8 * index.ntotal
    return total


def served_recall(version: LoadedVersion, vectors: np.ndarray, records: list[dict], k: int, weight: float) -> float:
    """Share of the exact top ``k`` of the blend over every item (watched excluded) that :func:`rank` serves."""
    hits = 0
    for n, record in enumerate(records):
        queries, _ = user_queries(record, vectors.shape[1], 1.0)
        everything = blend_scores(vectors @ queries[0], queries[1:] @ vectors.T, weight)
        watched = np.argsort(-everything)[n % 3: n % 3 + 3]  # 3 watched items among the best: excluded exactly
        everything[watched] = -np.inf
        truth = {f"v{i}" for i in np.argpartition(-everything, k)[:k]}
        hits += len(truth & {i for i, _ in rank(version, record, k, weight, exclude=[f"v{i}" for i in watched])})
    return hits / (k * len(records))


def user_record(vectors: np.ndarray, rng: np.random.Generator, interests: int) -> dict:
    """A user-embeddings value whose vectors are mixes of a few catalogue items (as DreamUMM/OPAL produce)."""
    picks = vectors[rng.integers(0, len(vectors), (interests, 3))].sum(axis=1)
    picks /= np.linalg.norm(picks, axis=1, keepdims=True)
    user = picks.mean(axis=0)
    weights = rng.dirichlet(np.ones(interests))
    return {"vector": vec_to_bin(user / np.linalg.norm(user)), "interests": vec_to_bin(picks), "interest_weights": weights.tolist()}


@click.command("bench-index")
@click.option("--items", type=int, default=1_000_000, show_default=True, envvar="DREAMSTREAM_BENCH_ITEMS", help="Catalogue size [env DREAMSTREAM_BENCH_ITEMS].")
@click.option("--dim", type=int, default=64, show_default=True, envvar="DREAMSTREAM_BENCH_DIM", help="Vector dimension [env DREAMSTREAM_BENCH_DIM].")
@click.option("--clusters", type=int, default=2_000, show_default=True, envvar="DREAMSTREAM_BENCH_CLUSTERS", help="Topic centres of the synthetic catalogue [env DREAMSTREAM_BENCH_CLUSTERS].")
@click.option("--noise", type=float, default=1.0, show_default=True, envvar="DREAMSTREAM_BENCH_NOISE", help="Spread around the centres (large = uniform) [env DREAMSTREAM_BENCH_NOISE].")
@click.option("--threads", type=int, default=2, show_default=True, envvar="DREAMSTREAM_INDEX_THREADS", help="Faiss threads for the build [env DREAMSTREAM_INDEX_THREADS].")
@click.option("--queries", type=int, default=300, show_default=True, envvar="DREAMSTREAM_BENCH_QUERIES", help="Users searched for latency and recall [env DREAMSTREAM_BENCH_QUERIES].")
@click.option("-k", "k", type=int, default=50, show_default=True, envvar="DREAMSTREAM_K", help="Candidates per user search [env DREAMSTREAM_K].")
@click.option("--interests", type=int, default=4, show_default=True, envvar="DREAMSTREAM_BENCH_INTERESTS", help="Interest vectors per user [env DREAMSTREAM_BENCH_INTERESTS].")
@click.option("--out", type=click.Path(path_type=Path), default=None, envvar="DREAMSTREAM_BENCH_OUT", help="Also write the numbers as JSON here [env DREAMSTREAM_BENCH_OUT].")
@click.option("--history", type=click.Path(path_type=Path), default=None, envvar="DREAMSTREAM_BENCH_HISTORY", help="Append the numbers as one JSON line here [env DREAMSTREAM_BENCH_HISTORY].")
@click.option("--plot", type=click.Path(path_type=Path), default=None, envvar="DREAMSTREAM_BENCH_PLOT", help="Draw every run of --history as a PNG here (recall and latency against memory and size) [env DREAMSTREAM_BENCH_PLOT].")
@click.option("--backend", type=click.Choice(["faiss", "milvus"]), default="faiss", show_default=True,
              envvar="DREAMSTREAM_BENCH_BACKEND",
              help="Index backend to measure; milvus starts Milvus Lite in a temporary folder unless --milvus-uri is set [env DREAMSTREAM_BENCH_BACKEND].")
@settings_options("index_dir", "index_shards", "index_recall_floor", "index_exact_max", "index_nlist", "index_nprobe",
                  "index_kind", "index_short_list", "log_level", "milvus_uri", "milvus_token_file")
def bench_index(settings: Settings, items: int, dim: int, clusters: int, noise: float, threads: int, queries: int, k: int,
                interests: int, out: Path | None, history: Path | None, plot: Path | None, backend: str) -> None:
    """Build a version of ITEMS synthetic vectors, then measure recall, search latency and memory."""
    setup_logging(settings.log_level)
    if backend == "milvus":
        from dreamstream.bench.index_milvus import bench_milvus

        return report(bench_milvus(settings, items, dim, clusters, noise, queries, k, interests), out, history, plot)
    faiss.omp_set_num_threads(threads)
    results: dict[str, float | int | str] = {"items": items, "dim": dim, "shards": settings.index_shards, "threads": threads,
                                             "index_kind": settings.index_kind, "clusters": clusters, "noise": noise}
    t = time.perf_counter()
    everything = synthetic_catalogue(items + queries, dim, clusters, noise)
    vectors, held_out = everything[:items], everything[items:]  # held-out draws: queries near, not in, the catalogue
    store = CatalogueShards(vectors, settings.index_shards)
    results["load_store_s"] = round(time.perf_counter() - t, 2)

    with tempfile.TemporaryDirectory(dir=settings.index_dir.parent if settings.index_dir.parent.exists() else None) as tmp:
        index_dir = Path(tmp) / "index"
        params = build_params(settings, threads)
        t = time.perf_counter()
        built = build_version(store, index_dir, params, progress=True)
        outcome = publish_version(built, index_dir, params.recall_floor)
        results["build_to_current_s"] = round(time.perf_counter() - t, 2)
        results["build_s_per_million"] = round(results["build_to_current_s"] / (items / 1e6), 2)
        results["published"] = str(outcome.published)
        results["kinds"] = ",".join(sorted({s.kind for s in built.manifest.shards}))
        results["nprobe"] = ",".join(str(s.nprobe) for s in built.manifest.shards)
        results["short_list"] = ",".join(str(s.short_list) for s in built.manifest.shards)
        results["build_recall_at_10_min_shard"] = built.manifest.recall
        if not outcome.published:
            click.echo(f"not published: {outcome.reason}")
            return
        results["disk_bytes_per_item"] = round(sum(f.stat().st_size for f in (index_dir / built.manifest.version).iterdir()) / items, 1)

        del store
        resident, anon = reader_rss(index_dir)
        results["rss_bytes_per_item"] = round(resident / items, 1)
        results["anon_bytes_per_item"] = round(anon / items, 1)
        retriever = Retriever(index_dir, follow=False)
        results["accounted_bytes_per_item"] = round(accounted_bytes(retriever.version) / items, 1)

        rng = np.random.default_rng(1)
        sample = held_out
        truth = faiss.knn(sample, vectors, 20, metric=faiss.METRIC_INNER_PRODUCT)[1]  # exact, without a copy of the catalogue
        for at in (10, 20):
            found = retriever.search_vectors(sample, at)
            rows = np.array([[int(h[0][1:]) for h in hits] + [-1] * (at - len(hits)) for hits in found])
            results[f"recall_at_{at}_end_to_end"] = round(recall_at_k(rows, truth[:, :at]), 4)

        records = [user_record(vectors, rng, interests) for _ in range(queries)]
        faiss.omp_set_num_threads(1)
        results["served_recall_at_20"] = round(served_recall(retriever.version, vectors, records[:50], 20, INTEREST_WEIGHT), 4)
        results["load_avg_1m_before_search"] = round(os.getloadavg()[0], 1)  # the box is shared: latency is read against this
        for threads_search in sorted({1, threads}):
            faiss.omp_set_num_threads(threads_search)
            lat, cpu = [], []
            for record in records:
                t, c = time.perf_counter(), time.thread_time()
                retriever.search(record, k)
                lat.append(time.perf_counter() - t)
                cpu.append(time.thread_time() - c)
            lat_ms, cpu_ms = np.array(lat) * 1000, np.array(cpu) * 1000
            results[f"search_ms_p50_threads{threads_search}"] = round(float(np.percentile(lat_ms, 50)), 2)
            results[f"search_ms_p99_threads{threads_search}"] = round(float(np.percentile(lat_ms, 99)), 2)
            if threads_search == 1:  # one thread does all the work: its CPU time is the latency of a core of its own
                results["search_cpu_ms_p50_threads1"] = round(float(np.percentile(cpu_ms, 50)), 2)
                results["search_cpu_ms_p99_threads1"] = round(float(np.percentile(cpu_ms, 99)), 2)
        retriever.close()

    report(results, out, history, plot)


def report(results: dict, out: Path | None, history: Path | None = None, plot: Path | None = None) -> None:
    """The numbers as a table on stdout, as JSON in ``out``, appended to ``history`` and drawn from it in ``plot``."""
    width = max(len(key) for key in results)
    for key, value in results.items():
        click.echo(f"{key:<{width}}  {value}")
    if out:
        out.write_text(json.dumps(results, indent=1))
    if history:
        with open(history, "a") as fh:
            fh.write(json.dumps(results) + "\n")
    if plot and history:
        from dreamstream.bench.index_curve import index_curve

        index_curve([json.loads(line) for line in history.read_text().splitlines() if line.strip()], plot)
        click.echo(f"plot: {plot}")
