"""The item stores (streams/items/): the same contract for memory and RocksDB, the ceiling, eviction, offset resume."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dreamstream.settings import Settings
from streams.items.compact_table import CompactTable, row_bytes
from streams.items.memory_store import MemoryItemStore
from streams.items.rocks_store import RocksItemStore
from streams.items.store import MB, ItemStore, open_item_store

D = 16


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32)


def ids(n: int, start: int = 0) -> list[str]:
    return [f"video-{i}" for i in range(start, start + n)]


@pytest.fixture(params=["memory", "rocksdb"])
def store(request, tmp_path: Path) -> ItemStore:
    if request.param == "memory":
        return MemoryItemStore(np.float32, 64 * MB)
    return RocksItemStore(tmp_path / "items", "item-vectors", np.float32, 1 * MB)


def test_put_then_batch_lookup_returns_the_vectors_and_a_found_mask(store: ItemStore) -> None:
    names, v = ids(5000), vectors(5000)
    assert store.put(names, v).all()
    query = names[::3] + ["never-published"] + names[:2]
    got, found = store.lookup(query)
    assert got.dtype == np.float32 and got.shape == (len(query), D)
    assert found.tolist() == [True] * len(names[::3]) + [False, True, True]
    np.testing.assert_array_equal(got[found], np.concatenate([v[::3], v[:2]]))
    assert not got[~found].any()
    assert len(store) == 5000 and store.dim == D


def test_a_put_overwrites_and_a_delete_forgets(store: ItemStore) -> None:
    names, v = ids(100), vectors(100)
    store.put(names, v)
    store.put(names[:10], v[50:60])
    store.delete(names[90:] + ["never-published"])
    got, found = store.lookup(names)
    assert found.tolist() == [True] * 90 + [False] * 10
    np.testing.assert_array_equal(got[:10], v[50:60])
    np.testing.assert_array_equal(got[10:90], v[10:90])
    store.put(names[95:96], v[:1])  # a deleted video published again
    np.testing.assert_array_equal(store.get(names[95]), v[0])


def test_the_last_of_two_puts_of_one_video_in_a_batch_wins(store: ItemStore) -> None:
    v = vectors(3)
    assert store.put(["a", "b", "a"], v).all()
    np.testing.assert_array_equal(store.get("a"), v[2])
    np.testing.assert_array_equal(store.get("b"), v[1])


def test_an_empty_store_answers_not_found(store: ItemStore) -> None:
    got, found = store.lookup(["a", "b"])
    assert not found.any() and len(got) == 2 and store.get("a") is None


def test_the_memory_store_refuses_videos_beyond_its_ceiling_and_keeps_the_rest() -> None:
    capacity = 100
    store = MemoryItemStore(np.float32, capacity * row_bytes(D, np.float32))
    names, v = ids(150), vectors(150)
    stored = store.put(names, v)
    assert stored.sum() == capacity and not stored[capacity:].any()
    assert len(store) == capacity
    got, found = store.lookup(names)
    np.testing.assert_array_equal(got[found], v[stored])
    store.delete(names[:10])  # room again: new videos are taken
    assert store.put(ids(10, 1000), vectors(10)).all()
    with pytest.raises(TypeError):
        list(store.items())


def test_float16_storage_is_within_half_precision() -> None:
    store = MemoryItemStore(np.float16, 8 * MB)
    v = vectors(200)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    store.put(ids(200), v)
    got, _ = store.lookup(ids(200))
    assert 0 < np.abs(got - v).max() <= 2.0 ** -11
    assert store.resident_bytes() < 200 * row_bytes(D, np.float32)


def test_the_rocksdb_cache_is_bounded_and_evicts_cold_videos_first(tmp_path: Path) -> None:
    cache_bytes = 50 * row_bytes(D, np.float32)
    store = RocksItemStore(tmp_path / "items", "item-vectors", np.float32, cache_bytes)
    names, v = ids(2000), vectors(2000)
    store.put(names, v)
    hot = names[:5]
    for start in range(0, 2000, 40):  # a scan over everything, with the hot videos asked for all along
        got, found = store.lookup(names[start:start + 40] + hot)
        assert found.all()
        np.testing.assert_array_equal(got[:40], v[start:start + 40])
    assert store.cache is not None and len(store.cache) <= store.cache.capacity == 50
    assert (store.cache.find(hot) >= 0).all(), "CLOCK evicted videos that were hit every batch"
    assert store.resident_bytes() <= cache_bytes + store.cache.slots.nbytes


def test_lookups_are_counted_by_where_the_vector_came_from(store: ItemStore) -> None:
    """What the worker exports as dreamstream_item_lookups_total: RAM hits, RocksDB reads (cache misses), absent ids."""
    names = ids(3)
    store.put(names, vectors(3))  # the rocksdb store caches a video when it is first looked up, not when it is put
    store.lookup(names + ["nobody"])
    store.lookup(names[:2])
    disk = 3 if isinstance(store, RocksItemStore) else 0
    assert (store.lookups.cache, store.lookups.disk, store.lookups.absent) == (5 - disk, disk, 1)


def test_the_rocksdb_store_resumes_from_its_offsets_with_its_vectors(tmp_path: Path) -> None:
    names, v = ids(300), vectors(300)
    store = RocksItemStore(tmp_path / "items", "item-vectors", np.float16, 1 * MB)
    store.put(names, v)
    store.delete(names[:3])
    store.commit({0: 301, 1: 7})
    assert sorted(store.items())[0][0] == "video-10"
    store.close()
    again = RocksItemStore(tmp_path / "items", "item-vectors", np.float16, 1 * MB)
    assert again.offsets() == {0: 301, 1: 7} and again.dim == D
    got, found = again.lookup(names)
    assert found.tolist() == [False] * 3 + [True] * 297
    np.testing.assert_array_equal(got[3:], v[3:].astype(np.float16).astype(np.float32))
    assert len(dict(again.items())) == 297


def test_a_rocksdb_folder_of_another_dtype_or_topic_is_rebuilt_not_misread(tmp_path: Path) -> None:
    store = RocksItemStore(tmp_path / "items", "item-vectors", np.float16, 1 * MB)
    store.put(ids(10), vectors(10))
    store.commit({0: 10})
    store.close()
    other = RocksItemStore(tmp_path / "items", "item-vectors", np.float32, 1 * MB)
    assert other.offsets() == {} and other.get("video-1") is None and other.dim is None


def test_the_memory_store_remembers_offsets_only_while_it_lives() -> None:
    store = MemoryItemStore()
    store.commit({0: 5})
    store.commit({1: 2})
    assert store.offsets() == {0: 5, 1: 2}
    assert MemoryItemStore().offsets() == {}


def test_settings_choose_the_store(tmp_path: Path) -> None:
    assert isinstance(open_item_store(Settings(), "t"), MemoryItemStore)
    s = Settings(item_store="rocksdb", item_store_dir=tmp_path, item_dtype="float16", item_cache_mb=3)
    store = open_item_store(s, "item-vectors.ns")
    assert isinstance(store, RocksItemStore) and store.folder == tmp_path / "item-vectors.ns"
    assert store.dtype == np.float16 and store.cache_bytes == 3 * MB


def test_the_compact_index_survives_growth_deletes_and_reuse() -> None:
    table = CompactTable(4, np.float32, 20_000)
    rng = np.random.default_rng(1)
    truth: dict[str, np.ndarray] = {}
    for step in range(30):  # random puts and deletes against a dict
        names = [f"k{i}" for i in rng.integers(0, 25_000, 700)]
        vecs = rng.standard_normal((700, 4)).astype(np.float32)
        stored = table.put_rows(names, vecs, evict=False)
        for name, vec, ok in zip(names, vecs, stored):
            if ok:
                truth[name] = vec
        gone = [f"k{i}" for i in rng.integers(0, 25_000, 300)]
        table.delete(gone)
        for name in gone:
            truth.pop(name, None)
    names = [f"k{i}" for i in range(25_000)]
    rows = table.find(names)
    assert len(table) == len(truth) == int((rows >= 0).sum())
    out = np.zeros((len(names), 4), np.float32)
    table.gather(rows, out)
    for name, row, vec in zip(names, rows, out):
        assert (row >= 0) == (name in truth)
        if row >= 0:
            np.testing.assert_array_equal(vec, truth[name])


def test_a_cache_under_random_puts_deletes_and_hits_serves_only_right_vectors() -> None:
    """Eviction against a dict: whatever the cache still finds is that video's newest vector, one row per video."""
    table = CompactTable(D, np.float32, 64)
    rng = np.random.default_rng(2)
    truth: dict[str, np.ndarray] = {}
    for step in range(300):
        names = [f"k{i}" for i in rng.integers(0, 400, int(rng.integers(1, 120)))]
        vecs = rng.standard_normal((len(names), D)).astype(np.float32)
        table.put_rows(names, vecs, evict=True)
        truth.update(zip(names, vecs))
        table.find([f"k{i}" for i in rng.integers(0, 40, 30)])  # a hot set, hit between puts
        gone = [f"k{i}" for i in rng.integers(0, 400, int(rng.integers(0, 10)))]
        table.delete(gone)
        for name in gone:
            truth.pop(name, None)
        everything = [f"k{i}" for i in range(400)]
        rows = table.find(everything)
        hit = rows >= 0
        assert len(set(rows[hit].tolist())) == hit.sum() == len(table) <= 64
        out = np.zeros((400, D), np.float32)
        table.gather(rows, out)
        for name, ok, vec in zip(everything, hit, out):
            if ok:
                np.testing.assert_array_equal(vec, truth[name])
