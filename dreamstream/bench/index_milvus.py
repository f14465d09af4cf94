"""``bench-index --backend milvus``: insert time, query-node memory, recall and search latency of a Milvus version.

The same synthetic catalogue and user records as the Faiss bench
(:mod:`dreamstream.commands.bench_index`). Without ``--milvus-uri`` Milvus
Lite runs as its own process in a temporary folder, and its resident memory
growth over the load is reported as the bytes one query node holds per
item. Latency is of the client's whole ``rank`` (searches of the user vector
and interests, the candidates' vectors fetched, the exact blend).
``recall_at_20_blend`` compares that ranking with the exact blend over the
whole catalogue: what re-ranking the returned candidates loses.
"""
from __future__ import annotations

import os
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from dreamstream.blend import blend_scores
from dreamstream.client import rank, user_queries
from dreamstream.index.recall import recall_at_k
from dreamstream.index.service import build_params
from dreamstream.index.store import ItemStore
from dreamstream.settings import Settings

BLEND_RECALL_USERS = 50  # exact blends over the whole catalogue per run: enough for +-0.01


def bench_milvus(settings: Settings, items: int, dim: int, clusters: int, noise: float, queries: int, k: int,
                 interests: int) -> dict[str, Any]:
    from dreamstream.commands.bench_index import synthetic_catalogue, user_record
    from dreamstream.index.milvus_connection import MilvusNames, connect
    from dreamstream.index.milvus_lite_server import MilvusLiteServer
    from dreamstream.index.milvus_publish import build_collection, drop_namespace, publish_collection
    from dreamstream.index.milvus_version import MilvusBackend

    results: dict[str, Any] = {"backend": "milvus", "items": items, "dim": dim}
    everything = synthetic_catalogue(items + queries, dim, clusters, noise)
    vectors, held_out = everything[:items], everything[items:]
    ids = [f"v{i}" for i in range(items)]
    store = ItemStore(settings.index_shards)
    store.put_many(ids, vectors)
    with ExitStack() as stack:
        server = None
        uri = settings.milvus_uri
        if not uri:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-milvus-"))
            server = stack.enter_context(MilvusLiteServer(Path(tmp) / "data", Path(tmp) / "milvus.log"))
            uri = server.uri
            results["engine"] = "milvus-lite (one process)"
        client = connect(uri, settings.milvus_token_file, timeout_s=600)
        names = MilvusNames(f"bench{os.getpid()}.")
        rss_before = server.rss_bytes() if server else 0
        timings: dict[str, float] = {}
        t = time.perf_counter()
        built = build_collection(client, names, store, build_params(settings), timings=timings)
        published, reason = publish_collection(client, names, built, settings.index_recall_floor)
        results["insert_s"] = round(timings["insert_s"], 2)
        results["index_and_load_s"] = round(timings["index_s"], 2)
        results["recall_tuning_s"] = round(timings["recall_s"], 2)
        results["insert_to_alias_s"] = round(time.perf_counter() - t, 2)
        results["kind"] = built.manifest.shards[0].kind
        results["nprobe"] = built.manifest.shards[0].nprobe
        results["build_recall_at_10"] = built.manifest.recall
        results["published"] = str(published)
        if not published:
            results["reason"] = reason
            return results
        del store
        if server:
            results["query_node_rss_bytes_per_item"] = round((server.rss_bytes() - rss_before) / items, 1)
        version = MilvusBackend(client, names, uri).load("")
        try:
            flat = faiss.IndexFlatIP(dim)
            flat.add(vectors)
            truth = flat.search(held_out, 10)[1]
            found = version.search(held_out, 10)[0]
            row_of = {ids[i]: int(i) for i in np.unique(truth)}
            rows = np.array([[row_of.get(i, -1) if i is not None else -1 for i in row] for row in found])
            results["recall_at_10_end_to_end"] = round(recall_at_k(rows, truth), 4)

            rng = np.random.default_rng(1)
            records = [user_record(vectors, rng, interests) for _ in range(queries)]
            lat, got = [], []
            for record in records:
                t = time.perf_counter()
                got.append([i for i, _ in rank(version, record, k)])
                lat.append(time.perf_counter() - t)
            lat_ms = np.array(lat) * 1000
            results["search_ms_p50"] = round(float(np.percentile(lat_ms, 50)), 2)
            results["search_ms_p99"] = round(float(np.percentile(lat_ms, 99)), 2)
            results["recall_at_20_blend"] = round(blend_recall(vectors, ids, records[:BLEND_RECALL_USERS], got, 20), 4)
        finally:
            drop_namespace(client, names, "")
    return results


def blend_recall(vectors: np.ndarray, ids: list[str], records: list[dict], ranked: list[list[str]], k: int) -> float:
    """Share of each record's exact top-``k`` blend over the whole catalogue that its served ranking holds."""
    hits = 0
    for record, served in zip(records, ranked):
        queries, _ = user_queries(record, vectors.shape[1], 1.0)
        exact = queries @ vectors.T
        scores = blend_scores(exact[0], exact[1:] if len(exact) > 1 else None)
        top = np.argpartition(-scores, k)[:k]
        hits += len({ids[i] for i in top} & set(served[:k]))
    return hits / max(1, k * len(records))


def plot_curves(runs: list[dict[str, Any]], path: Path) -> Path:
    """Insert time, query-node bytes per item and rank p50/p99 against catalogue size, one panel each."""
    from dreamstream.plots import _pyplot, _save

    plt = _pyplot()
    runs = sorted(runs, key=lambda r: r["items"])
    items = [r["items"] for r in runs]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    axes[0].plot(items, [r["insert_to_alias_s"] for r in runs], "o-", label="insert to alias")
    axes[0].plot(items, [r["insert_s"] for r in runs], "s--", label="insert + flush")
    axes[0].set(title="version build (s)", xscale="log")
    axes[1].plot(items, [r.get("query_node_rss_bytes_per_item", float("nan")) for r in runs], "o-")
    axes[1].set(title="query-node RSS (bytes / item)", xscale="log")
    axes[2].plot(items, [r["search_ms_p50"] for r in runs], "o-", label="p50")
    axes[2].plot(items, [r["search_ms_p99"] for r in runs], "s--", label="p99")
    axes[2].set(title="rank(): user + 4 interests, k=50 (ms)", xscale="log", yscale="log")
    for ax in axes:
        ax.set_xlabel("items")
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[2].legend()
    fig.suptitle("Milvus Lite (one process), bench-index --backend milvus", fontsize=10)
    return _save(fig, plt, path)


if __name__ == "__main__":  # python -m dreamstream.bench.index_milvus OUT.png RUN.json...: the plot of saved runs
    import json
    import sys

    print(plot_curves([json.loads(Path(p).read_text()) for p in sys.argv[2:]], Path(sys.argv[1])))
