"""Compressed index versions: recall after exact re-ranking, the exact blend over the short list, the
memory-mapped vectors file as part of the version, packed ids, and versions built before all of it."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from dreamstream.blend import blend_scores
from dreamstream.client import IndexCorruptError, Retriever, load_version, rank
from dreamstream.index.builder import BuildParams, build_version
from dreamstream.index.item_ids import ItemIds
from dreamstream.index.manifest import read_manifest, sha256_bytes
from dreamstream.index.publish import install, read_current
from dreamstream.index.recall import exact_neighbours, recall_at_k
from dreamstream.index.store import ItemStore

PQ = BuildParams(exact_max=2_000, kind="ivf-pq", recall_queries=200, threads=1)  # one thread: OpenMP spins on a busy box


@pytest.fixture
def catalogue(vectors_factory):
    x = vectors_factory(12_000, dim=32, clusters=120, noise=1.0, seed=7)
    store = ItemStore(shards=2)
    store.put_many([f"v{i}" for i in range(len(x))], x)
    return x, store


def _rows(hits: list[list[tuple[str, float]]], k: int) -> np.ndarray:
    return np.array([[int(i[1:]) for i, _ in h] + [-1] * (k - len(h)) for h in hits])


def test_recall_after_reranking_clears_the_floor_where_the_codes_alone_do_not(tmp_path, catalogue):
    x, store = catalogue
    built = build_version(store, tmp_path, PQ)
    install(built, tmp_path)
    assert {s.kind for s in built.manifest.shards} == {"ivf-pq"}
    assert all(s.short_list > 1 and s.vectors for s in built.manifest.shards)
    assert built.manifest.recall >= 0.95

    queries = x[np.random.default_rng(1).choice(len(x), 300, replace=False)] + 0.05
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = exact_neighbours(x, queries, 20)
    with Retriever(tmp_path, follow=False) as r:
        reranked = recall_at_k(_rows(r.search_vectors(queries, 20), 20), truth)
        version = r.version
        codes_only = []
        for shard, index in enumerate(version.indexes):  # the same index without the exact re-ranking
            scores, rows = index.search(queries, 20)
            codes_only.append((scores, [version.ids[shard].take(row) for row in rows]))
    scores = np.hstack([s for s, _ in codes_only])
    ids = np.hstack([np.array(i, dtype=object) for _, i in codes_only])
    top = np.take_along_axis(ids, np.argsort(-scores, axis=1)[:, :20], 1)
    raw = recall_at_k(np.vectorize(lambda i: int(i[1:]))(top), truth)
    assert reranked >= 0.95
    assert raw < reranked - 0.03  # PQ scores alone misorder neighbours: the re-ranking is doing the work


def test_blend_and_exclusion_are_exact_over_the_short_list(tmp_path, catalogue):
    x, store = catalogue
    install(build_version(store, tmp_path, PQ), tmp_path)
    version = load_version(tmp_path, read_current(tmp_path))
    rng = np.random.default_rng(3)
    overlaps = []
    for _ in range(20):
        picks = x[rng.choice(len(x), 4)]
        user = picks.mean(axis=0)
        record = {"vector": user / np.linalg.norm(user), "interests": picks, "interest_weights": [1.0] * 4}
        everything = blend_scores(x @ record["vector"], picks @ x.T, 0.3)
        watched = [f"v{i}" for i in np.argsort(-everything)[:5]]  # the 5 best are excluded
        got = rank(version, record, 20, 0.3, exclude=watched)
        got_rows = [int(i[1:]) for i, _ in got]
        assert not set(watched) & {i for i, _ in got}
        np.testing.assert_allclose([s for _, s in got], everything[got_rows], rtol=1e-5, atol=1e-5)  # exact blend
        assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
        best = [i for i in np.argsort(-everything) if f"v{i}" not in watched][:20]
        overlaps.append(len(set(best) & set(got_rows)) / 20)
    assert np.mean(overlaps) >= 0.95


def test_vectors_file_is_part_of_the_version_and_checked(tmp_path, catalogue):
    x, store = catalogue
    first = build_version(store, tmp_path, PQ)
    entry = first.manifest.shards[0]
    assert (first.folder / entry.vectors).exists() and read_current(tmp_path) is None  # written before publishing
    install(first, tmp_path)
    final = tmp_path / first.manifest.version
    np.testing.assert_array_equal(np.fromfile(final / entry.vectors, "<f4").reshape(entry.count, -1),
                                  store.shard(0)[1])
    retriever = Retriever(tmp_path, follow=False)
    assert isinstance(retriever.version.exact[0], np.memmap)

    store.put("v0", x[1])  # one shard changes; the other's files (vectors too) are shared with the first version
    changed = 0 if "v0" in store.shard(0)[0] else 1
    second = build_version(store, tmp_path, PQ, rebuild={changed}, previous=first.manifest)
    kept = 1 - changed
    assert os.stat(final / entry.vectors.replace("000", f"{kept:03d}")).st_ino == \
        os.stat(second.folder / second.manifest.shards[kept].vectors).st_ino
    bad = second.folder / second.manifest.shards[changed].vectors
    data = bytearray(bad.read_bytes())
    data[100] ^= 0xFF
    bad.write_bytes(bytes(data))
    install(second, tmp_path)
    with pytest.raises(IndexCorruptError, match=r"vectors\.f32 is corrupt"):
        retriever.refresh()
    assert retriever.version.name == first.manifest.version  # the previous version keeps serving
    assert retriever.search_vectors(x[:1], 1)[0][0][0] == "v0"
    retriever.close()


def test_a_version_built_before_compression_still_loads(tmp_path, vectors_factory):
    """An IVF-Flat version with a JSON id list and a manifest without the new fields, as versions were written."""
    x = vectors_factory(6_000, dim=16, clusters=40)
    store = ItemStore(shards=2)
    store.put_many([f"v{i}" for i in range(len(x))], x)
    built = build_version(store, tmp_path, BuildParams(exact_max=1_000, threads=1))
    manifest = json.loads((built.folder / "manifest.json").read_text())
    for shard, entry in enumerate(manifest["shards"]):
        ids_json = json.dumps(store.shard(shard)[0], separators=(",", ":")).encode()
        (built.folder / entry["ids"]).unlink()
        entry["ids"] = f"shard-{shard:03d}.ids.json"
        (built.folder / entry["ids"]).write_bytes(ids_json)
        entry["ids_sha256"] = sha256_bytes(ids_json)
        for new_field in ("vectors", "vectors_sha256", "short_list"):
            del entry[new_field]
    (built.folder / "manifest.json").write_text(json.dumps(manifest))
    old = read_manifest(built.folder)
    install(built, tmp_path)
    with Retriever(tmp_path, follow=False) as r:
        assert {s.kind for s in r.version.manifest.shards} == {"ivf"} and r.version.exact == (None, None)
        assert [h[0][0] for h in r.search_vectors(x[:50], 1)] == [f"v{i}" for i in range(50)]
        np.testing.assert_allclose(r.version.vectors(["v3"])[0], x[3], atol=1e-6)

    store.put("v1", x[2])  # switching the kind rebuilds every shard, even unchanged ones
    second = build_version(store, tmp_path, BuildParams(exact_max=1_000, kind="ivf-pq", threads=1, recall_queries=100),
                           rebuild={0}, previous=old)
    assert sorted(second.manifest.rebuilt) == [0, 1] and {s.kind for s in second.manifest.shards} == {"ivf-pq"}


def test_packed_ids_round_trip_and_find(tmp_path):
    ids = sorted(["a", "b\n", "ß", "video-42", "\u2603", "z" * 300, ""])
    packed = ItemIds.from_bytes(ItemIds.from_list(ids).to_bytes())
    assert list(packed) == ids and len(packed) == len(ids)
    assert [packed.find(i) for i in ids] == list(range(len(ids))) and packed.find("nope") == -1
    assert list(packed.take(np.array([3, 0]))) == [ids[3], ids[0]]
    with pytest.raises(ValueError, match="magic"):
        ItemIds.from_bytes(b"[\"a\"]")
