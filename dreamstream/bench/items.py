"""`dreamstream bench-items`: what an item store costs per video, per lookup and per restart, at catalogue sizes.

Each (store, size) runs in a fresh process (``spawn``), so its resident
memory is its own:

1. **load**: ``videos`` item-vectors records (msgpack values, as
   ``publish-items`` writes them) go through the worker's item table
   (:class:`streams.kafka.item_table.ItemTable`: decode, check, store) in
   fetches of 50,000, as the table reads the topic at a cold start. The
   broker's fetch is not in it (``bench-scale`` runs the worker on a broker).
2. **resident bytes per video**: the process's RSS after the load minus its
   RSS before (ids and records are made per fetch and dropped), and again
   after the lookups (a RocksDB store's cache has filled by then).
3. **lookup**: events' video ids drawn with Zipf(``zipf``) popularity
   (rank ``k`` with probability ~ ``1/k^s``; ranks are scattered over the
   catalogue by a fixed permutation), looked up ``batch`` at a time as the
   worker does, µs per event after a warm-up pass of as many other draws
   (the timed draws miss a cache as often as live traffic would).
4. **warm restart**: the store closed and opened again on its folder, and
   one batch served. A memory store has nothing to reopen: its restart is a
   cold load (1.).
"""
from __future__ import annotations

import gc
import json
import multiprocessing
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

FETCH = 50_000
PRIME = 2_147_483_647  # the rank -> video permutation: k * PRIME mod n (n < PRIME, so it is a bijection)


def rss_bytes() -> int:
    """This process's resident set now."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def trimmed_rss_bytes() -> int:
    """The resident set once the allocator gave back what it holds free (a fetch's records, freed, stay resident
    otherwise: ~60 MB at 50,000 records; glibc's ``malloc_trim``)."""
    import ctypes

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: the plain reading
        pass
    return rss_bytes()


def zipf_videos(n: int, count: int, s: float, rng: np.random.Generator) -> np.ndarray:
    """``count`` video numbers in [0, n) with rank ``k`` drawn ~ ``1/k^s`` (continuous inverse CDF), ranks scattered."""
    u = rng.random(count)
    if abs(s - 1.0) < 1e-9:
        ranks = np.exp(u * np.log(n + 1.0)) - 1.0  # CDF(k) = ln(1+k)/ln(1+n)
    else:
        top = (n + 1.0) ** (1.0 - s)
        ranks = (1.0 + u * (top - 1.0)) ** (1.0 / (1.0 - s)) - 1.0
    ranks = np.minimum(ranks.astype(np.int64), n - 1)
    return (ranks * PRIME) % n


class _Record:  # what the item table reads of a consumer record
    __slots__ = ("key", "value", "partition", "offset")

    def __init__(self, key: bytes, value: bytes, partition: int, offset: int) -> None:
        self.key, self.value, self.partition, self.offset = key, value, partition, offset


def _records(start: int, stop: int, dim: int) -> list[_Record]:
    """item-vectors records of videos ``start..stop``: unit vectors, as ``publish-items`` writes them."""
    from dreamstream import codec

    rng = np.random.default_rng(start)
    vectors = rng.standard_normal((stop - start, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [_Record(codec.key_bytes(f"v{i}"), codec.pack(codec.item_vector_record(f"v{i}", vec, "bench", 0)), 0, i)
            for i, vec in zip(range(start, stop), vectors)]


def measure_one(store: str, videos: int, dim: int, dtype: str, cache_mb: int, folder: str, events: int, batch: int,
                zipf: float) -> dict[str, Any]:
    """One store at one catalogue size, in this process (run it in a fresh one)."""
    from dreamstream.settings import Settings
    from streams.kafka.item_table import ItemTable
    from streams.items.store import open_item_store

    settings = Settings(item_store=store, item_dtype=dtype, item_cache_mb=cache_mb, item_store_dir=Path(folder))
    _records(0, FETCH, dim)  # the imports, before the baseline
    rss0 = trimmed_rss_bytes()
    table = ItemTable(settings, "item-vectors", dim=lambda: dim, store=open_item_store(settings, "item-vectors"))
    load_s = 0.0
    for start in range(0, videos, FETCH):
        records = _records(start, min(videos, start + FETCH), dim)  # the broker's part: not timed
        t0 = time.perf_counter()
        for record in records:
            table.handle(record)
        table.flush()
        load_s += time.perf_counter() - t0
        del records
    rss_loaded = rss_bytes() - rss0
    rss_trimmed = trimmed_rss_bytes() - rss0

    rng = np.random.default_rng(7)
    lookup = table.store.lookup
    for _ in range(max(1, events // batch)):  # warm-up on other draws: a cache fills, the allocator settles
        lookup([f"v{i}" for i in zipf_videos(videos, batch, zipf, rng)])
    queries = [[f"v{i}" for i in zipf_videos(videos, batch, zipf, rng)] for _ in range(max(1, events // batch))]
    t0 = time.perf_counter()
    missing = 0
    for q in queries:
        missing += int((~lookup(q)[1]).sum())
    lookup_us = (time.perf_counter() - t0) / (len(queries) * batch) * 1e6
    del queries
    rss_serving = trimmed_rss_bytes() - rss0
    out = {"store": store, "videos": videos, "dim": dim, "dtype": dtype, "cache_mb": cache_mb, "load_s": round(load_s, 2),
           "load_records_per_s": round(videos / load_s), "rss_loaded_bytes_per_video": round(rss_loaded / videos, 1),
           "rss_trimmed_bytes_per_video": round(rss_trimmed / videos, 1),
           "rss_serving_mb": round(rss_serving / 2**20, 1), "rss_serving_bytes_per_video": round(rss_serving / videos, 1),
           "store_bytes_per_video": round(table.store.resident_bytes() / videos, 1), "lookup_us_per_event": round(lookup_us, 3),
           "missing": missing, "batch": batch, "zipf": zipf}
    table.store.close()
    if store == "rocksdb":
        out.update(_warm_restart(settings, batch, videos, zipf))
    else:
        out["warm_restart_s"] = out["load_s"]  # nothing persists: a restart is a cold load
    return out


def _warm_restart(settings, batch: int, videos: int, zipf: float) -> dict[str, Any]:
    """Close and reopen the store on its folder; seconds until one batch is served, and what the offsets say."""
    from streams.items.store import open_item_store

    gc.collect()
    t0 = time.perf_counter()
    store = open_item_store(settings, "item-vectors")
    offsets = store.offsets()
    _, found = store.lookup([f"v{i}" for i in zipf_videos(videos, batch, zipf, np.random.default_rng(9))])
    took = time.perf_counter() - t0
    store.close()
    return {"warm_restart_s": round(took, 3), "warm_offsets": offsets, "warm_found": int(found.sum())}


def _child(args: dict[str, Any], queue: Any) -> None:
    try:
        queue.put(measure_one(**args))
    except BaseException as err:  # the parent reports it: a failed size must not look like a measurement
        queue.put({"error": repr(err), **{k: args[k] for k in ("store", "videos")}})


def measure(stores: list[str], sizes: list[int], dim: int, dtype: str, cache_mb: int, events: int, batch: int,
            zipf: float, work: Path, progress: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every (store, size) in its own spawned process, one after another (they would compete for the cores)."""
    ctx = multiprocessing.get_context("spawn")
    results = []
    for videos in sizes:
        for store in stores:
            folder = work / f"{store}-{videos}"
            queue = ctx.Queue()
            proc = ctx.Process(target=_child, args=(dict(store=store, videos=videos, dim=dim, dtype=dtype,
                                                         cache_mb=cache_mb, folder=str(folder), events=events,
                                                         batch=batch, zipf=zipf), queue))
            proc.start()
            result = queue.get()
            proc.join()
            shutil.rmtree(folder, ignore_errors=True)
            progress(json.dumps(result))
            results.append(result)
    return results


def table(results: list[dict[str, Any]]) -> str:
    """A markdown table of the results (docs/measurements.md)."""
    head = ("| store | videos | dtype | cache MiB | load rec/s | RSS B/video (loaded / trimmed) | RSS MiB (serving) | "
            "lookup µs/event | warm restart s |")
    rows = [head, "|" + "---|" * 9]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['store']} | {r['videos']:,} | failed: {r['error'][:80]} |||||||")
            continue
        rows.append(f"| {r['store']} | {r['videos']:,} | {r['dtype']} | {r['cache_mb']} | {r['load_records_per_s']:,} | "
                    f"{r['rss_loaded_bytes_per_video']} / {r['rss_trimmed_bytes_per_video']} | {r['rss_serving_mb']} | {r['lookup_us_per_event']} | "
                    f"{r['warm_restart_s']} |")
    return "\n".join(rows)
