"""`dreamstream bench-index`: build time, recall, search latency and memory of the index at catalogue scale.

The catalogue is synthetic but shaped like trained item embeddings: unit
vectors scattered around many topic centres (``--clusters``, ``--noise``;
``--noise`` large gives uniform vectors on the sphere, the worst case for
IVF). Recall is measured end to end: the merged top-10 of all shards against
exact search over the whole catalogue.
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

from dreamstream.cli_options import settings_options
from dreamstream.client import Retriever
from dreamstream.codec import vec_to_bin
from dreamstream.index.builder import build_version
from dreamstream.index.recall import recall_at_k
from dreamstream.index.service import build_params, publish_version
from dreamstream.index.store import ItemStore
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


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reader_rss(index_dir: Path) -> int:
    """Resident bytes a fresh process adds by loading the index with a Retriever (this process's heap is polluted)."""
    code = (
        "import sys; from dreamstream.commands.bench_index import rss_bytes; from dreamstream.client import Retriever; "
        "before = rss_bytes(); r = Retriever(sys.argv[1], follow=False); print(rss_bytes() - before)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(index_dir)], capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1])


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
@click.option("--backend", type=click.Choice(["faiss", "milvus"]), default="faiss", show_default=True,
              help="Index backend to measure; milvus starts Milvus Lite in a temporary folder unless --milvus-uri is set.")
@settings_options("index_dir", "index_shards", "index_recall_floor", "index_exact_max", "index_nlist", "index_nprobe", "log_level",
                  "milvus_uri", "milvus_token_file")
def bench_index(settings: Settings, items: int, dim: int, clusters: int, noise: float, threads: int, queries: int, k: int,
                interests: int, out: Path | None, backend: str) -> None:
    """Build a version of ITEMS synthetic vectors, then measure recall, search latency and memory."""
    setup_logging(settings.log_level)
    if backend == "milvus":
        from dreamstream.bench.index_milvus import bench_milvus

        return report(bench_milvus(settings, items, dim, clusters, noise, queries, k, interests), out)
    faiss.omp_set_num_threads(threads)
    results: dict[str, float | int | str] = {"items": items, "dim": dim, "shards": settings.index_shards, "threads": threads}
    t = time.perf_counter()
    everything = synthetic_catalogue(items + queries, dim, clusters, noise)
    vectors, held_out = everything[:items], everything[items:]  # held-out draws: queries near, not in, the catalogue
    ids = [f"v{i}" for i in range(items)]
    store = ItemStore(settings.index_shards)
    store.put_many(ids, vectors)
    results["load_store_s"] = round(time.perf_counter() - t, 2)

    with tempfile.TemporaryDirectory(dir=settings.index_dir.parent if settings.index_dir.parent.exists() else None) as tmp:
        index_dir = Path(tmp) / "index"
        params = build_params(settings, threads)
        t = time.perf_counter()
        built = build_version(store, index_dir, params, progress=True)
        outcome = publish_version(built, index_dir, params.recall_floor)
        results["build_to_current_s"] = round(time.perf_counter() - t, 2)
        results["published"] = str(outcome.published)
        results["kinds"] = ",".join(sorted({s.kind for s in built.manifest.shards}))
        results["nprobe"] = ",".join(str(s.nprobe) for s in built.manifest.shards)
        results["build_recall_at_10_min_shard"] = built.manifest.recall
        if not outcome.published:
            click.echo(f"not published: {outcome.reason}")
            return
        results["disk_bytes_per_item"] = round(sum(f.stat().st_size for f in (index_dir / built.manifest.version).iterdir()) / items, 1)

        del store
        results["rss_bytes_per_item"] = round(reader_rss(index_dir) / items, 1)
        retriever = Retriever(index_dir, follow=False)

        rng = np.random.default_rng(1)
        sample = held_out
        flat = faiss.IndexFlatIP(dim)
        flat.add(vectors)
        truth = flat.search(sample, 10)[1]
        found = retriever.search_vectors(sample, 10)
        index_of = {f"v{i}": i for i in np.unique(truth)}
        rows = np.array([[index_of.get(h[0], -1) for h in hits] + [-1] * (10 - len(hits)) for hits in found])
        results["recall_at_10_end_to_end"] = round(recall_at_k(rows, truth), 4)

        records = [user_record(vectors, rng, interests) for _ in range(queries)]
        for threads_search in (1, threads):
            faiss.omp_set_num_threads(threads_search)
            lat = []
            for record in records:
                t = time.perf_counter()
                retriever.search(record, k)
                lat.append(time.perf_counter() - t)
            lat_ms = np.array(lat) * 1000
            results[f"search_ms_p50_threads{threads_search}"] = round(float(np.percentile(lat_ms, 50)), 2)
            results[f"search_ms_p99_threads{threads_search}"] = round(float(np.percentile(lat_ms, 99)), 2)
        retriever.close()

    report(results, out)


def report(results: dict, out: Path | None) -> None:
    """The numbers as a table on stdout, and as JSON in ``out``."""
    width = max(len(key) for key in results)
    for key, value in results.items():
        click.echo(f"{key:<{width}}  {value}")
    if out:
        out.write_text(json.dumps(results, indent=1))
