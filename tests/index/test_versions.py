"""Index versions without a broker: sharding, the store, building, incremental reuse, swaps, corruption, pruning, IVF recall."""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from dreamstream.client import IndexCorruptError, Retriever
from dreamstream.index.builder import BuildParams, build_version
from dreamstream.index.manifest import read_manifest
from dreamstream.index.publish import install, prune, read_current, read_history
from dreamstream.index.service import publish_version
from dreamstream.index.sharding import shard_of, shards_of
from dreamstream.index.store import ItemStore


def test_shard_of_is_stable_and_spreads():
    # crc32 of the UTF-8 id is fixed forever; Python's hash() would change per process.
    import zlib

    assert shard_of("video-1", 7) == zlib.crc32(b"video-1") % 7
    counts = np.bincount(shards_of((f"v{i}" for i in range(10_000)), 4), minlength=4)
    assert counts.min() > 2_000


def test_store_keeps_latest_vector_and_forgets_tombstones(vectors_factory):
    store = ItemStore(shards=3)
    x = vectors_factory(10, dim=8)
    for i in range(10):
        store.put(f"v{i}", x[i] * 3)  # stored unit norm
    store.put("v0", x[5])
    store.delete("v1")
    store.delete("never-seen")
    assert len(store) == 9 and "v1" not in store and "v0" in store
    ids, vecs = store.shard(shard_of("v0", 3))
    np.testing.assert_allclose(vecs[ids.index("v0")], x[5], atol=1e-6)
    with pytest.raises(ValueError, match="8-d"):
        store.put("bad", np.ones(4))


def test_incremental_build_rebuilds_only_changed_shards(tmp_path, vectors_factory, publish):
    store = ItemStore(shards=4)
    x = vectors_factory(2_000, dim=16)
    store.put_many([f"v{i}" for i in range(2_000)], x)
    store.dirty.clear()
    first = publish(store, tmp_path)
    assert first.rebuilt == [0, 1, 2, 3] and first.items == 2_000

    changed = shard_of("v7", 4)
    store.put("v7", x[8])
    second = publish(store, tmp_path, previous=first, rebuild=set(store.dirty))
    assert second.rebuilt == [changed]
    for s in range(4):
        a = os.stat(tmp_path / first.version / first.shards[s].file)
        b = os.stat(tmp_path / second.version / second.shards[s].file)
        assert (a.st_ino == b.st_ino) == (s != changed)
    with Retriever(tmp_path, follow=False) as r:
        assert r.search_vectors(x[8:9], 2)[0][0][1] == pytest.approx(1.0, abs=1e-5)
        assert {i for i, _ in r.search_vectors(x[8:9], 2)[0]} == {"v7", "v8"}


def test_readers_never_see_a_partial_version(tmp_path, vectors_factory, publish):
    """Each generation g holds only ids 'g{g}-*'; a search mixing generations would be a torn read."""
    x = vectors_factory(3_000, dim=16)

    def generation(g: int) -> ItemStore:
        store = ItemStore(shards=3)
        store.put_many([f"g{g}-{i}" for i in range(len(x))], x)
        return store

    publish(generation(0), tmp_path)
    retriever = Retriever(tmp_path, check_interval_ms=5)
    errors: list[BaseException] = []
    searches = [0]
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                for hits in retriever.search_vectors(x[:4], 10):
                    assert len(hits) == 10
                    assert len({h[0].split("-")[0] for h in hits}) == 1, hits
                searches[0] += 1
        except BaseException as err:  # noqa: BLE001 - surfaced below
            errors.append(err)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    seen = set()
    for g in range(1, 6):
        publish(generation(g), tmp_path)
        deadline = time.monotonic() + 5
        while retriever.version.name != read_current(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.005)
        seen.add(retriever.version.name)
    stop.set()
    for t in threads:
        t.join()
    retriever.close()
    assert not errors, errors[0]
    assert len(seen) == 5 and searches[0] > 20


def test_corrupt_shard_is_refused_and_previous_keeps_serving(tmp_path, vectors_factory, publish):
    x = vectors_factory(1_000, dim=16)
    store = ItemStore(shards=2)
    store.put_many([f"v{i}" for i in range(1_000)], x)
    first = publish(store, tmp_path)
    retriever = Retriever(tmp_path, follow=False)

    store.put("v0", x[1])
    built = build_version(store, tmp_path, BuildParams(), rebuild={0, 1}, previous=first)
    shard_path = built.folder / built.manifest.shards[1].file
    data = bytearray(shard_path.read_bytes())
    data[-5] ^= 0xFF
    shard_path.write_bytes(bytes(data))
    install(built, tmp_path)

    with pytest.raises(IndexCorruptError, match=r"shard-001\.faiss is corrupt: sha256"):
        retriever.refresh()
    assert retriever.version.name == first.version
    assert retriever.search_vectors(x[:1], 1)[0][0][0] == "v0"
    assert isinstance(retriever.last_error, IndexCorruptError)
    with pytest.raises(IndexCorruptError, match="shard-001"):
        Retriever(tmp_path, follow=False)  # nothing else to fall back to: a clear error


def test_prune_removes_only_versions_retired_past_the_grace(tmp_path, vectors_factory, publish):
    x = vectors_factory(200, dim=8)
    store = ItemStore(shards=1)
    store.put_many([f"v{i}" for i in range(200)], x)
    versions = [publish(store, tmp_path).version for _ in range(3)]
    (tmp_path / "not-ours").mkdir()
    history = {h["version"]: h["published_at"] for h in read_history(tmp_path)}
    # v0 retired when v1 was published, v1 when v2 was: only v0 is past a grace measured from v1's publish time.
    now = history[versions[1]] + 100.0
    history_span = history[versions[2]] - history[versions[1]]
    assert prune(tmp_path, grace_s=100.0 - 1e-3, now=now) == [versions[0]]
    assert prune(tmp_path, grace_s=100.0 + history_span + 1.0, now=now) == []
    remaining = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert remaining == sorted([versions[1], versions[2], "not-ours"])
    assert prune(tmp_path, grace_s=0.0) == [versions[1]]  # current is never pruned
    assert read_current(tmp_path) == versions[2]


def test_ivf_meets_recall_floor_and_low_recall_is_not_published(tmp_path, vectors_factory):
    x = vectors_factory(40_000, dim=32, clusters=200, noise=1.0, seed=3)
    store = ItemStore(shards=2)
    store.put_many([f"v{i}" for i in range(len(x))], x)
    good = build_version(store, tmp_path, BuildParams(exact_max=5_000, recall_floor=0.95))
    assert {s.kind for s in good.manifest.shards} == {"ivf"}
    assert good.manifest.recall >= 0.95
    assert publish_version(good, tmp_path, 0.95).published
    assert read_current(tmp_path) == good.manifest.version
    manifest = read_manifest(tmp_path / good.manifest.version)
    assert manifest.recall == good.manifest.recall

    forced = build_version(store, tmp_path, BuildParams(exact_max=5_000, recall_floor=0.95, nprobe=1, nlist=400))
    assert forced.manifest.recall < 0.95
    outcome = publish_version(forced, tmp_path, 0.95)
    assert not outcome.published and "under the floor" in outcome.reason
    assert read_current(tmp_path) == good.manifest.version
    assert not forced.folder.exists() and not (tmp_path / forced.manifest.version).exists()

    with Retriever(tmp_path, follow=False) as r:
        sample = np.random.default_rng(0).choice(len(x), 500, replace=False)
        top = r.search_vectors(x[sample], 1)
        assert np.mean([hits[0][0] == f"v{i}" for hits, i in zip(top, sample)]) >= 0.98


def test_predicted_nprobe_matches_measured_recall(vectors_factory):
    """The one-pass prediction of recall per nprobe agrees with real searches."""
    import faiss

    from dreamstream.index.builder import smallest_nprobe
    from dreamstream.index.recall import exact_neighbours, recall_at_k, sample_queries

    x = vectors_factory(20_000, dim=32, clusters=100, noise=1.2, seed=5)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(32), 32, 200, faiss.METRIC_INNER_PRODUCT)
    ivf.train(x[:8_000])
    ivf.add(x)
    queries = sample_queries(x, 300)
    truth = exact_neighbours(x, queries, 10)
    nprobe = smallest_nprobe(ivf, x, queries, truth, 0.9, max_nprobe=200)
    assert 1 < nprobe < 200
    ivf.nprobe = nprobe
    assert recall_at_k(ivf.search(queries, 10)[1], truth) >= 0.9 - 0.002
    ivf.nprobe = nprobe - 1
    assert recall_at_k(ivf.search(queries, 10)[1], truth) < 0.9
