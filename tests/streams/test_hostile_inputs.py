"""Hostile input on every topic that carries vectors or batches: refused with a reason, counted, never fatal, bounded."""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from dreamstream import codec
from dreamstream.client import user_queries
from dreamstream.index.follower import ApplyStats, apply_records
from dreamstream.index.store import ItemStore
from dreamstream.settings import Settings
from dreamstream.vectors import MAX_NORM, MIN_NORM, checked_vector
from streams.domain.validate import LABELS, MAX_EVENTS_PER_MESSAGE, decode_message
from streams.kafka.item_table import ItemTable

D = 8
NOW = 1_700_000_000_000


def vector_value(vec: np.ndarray | bytes) -> bytes:
    raw = vec if isinstance(vec, bytes) else codec.vec_to_bin(np.asarray(vec, np.float32))
    return codec.pack({"video": "v", "vector": raw, "model": "m", "ts": 1})


def hostile_vectors() -> dict[str, bytes]:
    good = np.ones(D, np.float32)
    nan = good.copy()
    nan[3] = np.nan
    inf = good.copy()
    inf[0] = np.inf
    return {"nan": vector_value(nan), "inf": vector_value(inf), "empty": vector_value(b""),
            "wrong-dim": vector_value(np.ones(D + 1)), "huge": vector_value(good * 1e20),
            "tiny": vector_value(good * 1e-30), "odd-bytes": vector_value(b"\x00" * 7), "zero": vector_value(good * 0),
            "not-msgpack": b"\xc1\xc1", "no-vector": codec.pack({"video": "v"}), "a-list": codec.pack([1, 2])}


@pytest.mark.parametrize("scale", [MIN_NORM * 2, 1.0, MAX_NORM / 2])
def test_a_sane_vector_comes_back_unit_length(scale: float) -> None:
    vec = checked_vector(np.arange(1, D + 1, dtype=np.float32) * scale / np.sqrt(204), D)
    assert vec.dtype == np.float32 and abs(float(np.linalg.norm(vec)) - 1) < 1e-5


@pytest.mark.parametrize("name", sorted(hostile_vectors()))
def test_the_worker_item_table_refuses_each_hostile_vector_and_keeps_the_previous(name: str) -> None:
    refused: list[str] = []
    table = ItemTable(Settings(), "item-vectors", dim=lambda: D, on_refused=refused.append)
    table.apply(b"v", vector_value(np.ones(D)))
    before = table.get("v").copy()
    table.apply(b"v", hostile_vectors()[name])
    table.flush()  # a fetch's vectors are checked together when it is stored
    assert refused and refused[0] in ("unreadable", "bad-vector")
    np.testing.assert_array_equal(table.get("v"), before)
    assert np.isfinite(table.get("v")).all()


@pytest.mark.parametrize("name", sorted(hostile_vectors()))
def test_the_indexer_refuses_each_hostile_vector_without_raising(name: str) -> None:
    store, stats = ItemStore(shards=2, dim=D), ApplyStats()
    apply_records(store, [(b"a", vector_value(np.ones(D))), (b"b", hostile_vectors()[name])], stats)
    assert stats.puts == 1 and stats.rejected == 1 and "b" not in store and "a" in store


def test_the_indexer_takes_the_first_width_on_an_empty_store_and_refuses_others() -> None:
    store, stats = ItemStore(shards=2), ApplyStats()
    apply_records(store, [(b"a", vector_value(np.ones(D))), (b"b", vector_value(np.ones(D + 3)))], stats)
    assert stats.puts == 1 and stats.rejected == 1 and "a" in store


def test_a_4_mib_array_of_nils_is_bounded_work_and_one_letter_for_the_excess() -> None:
    value = codec.pack([None] * 4_000_000)
    t0 = time.perf_counter()
    events, rejections = decode_message(b"u", value, NOW)
    took = time.perf_counter() - t0
    assert not events and len(rejections) == MAX_EVENTS_PER_MESSAGE + 1
    excess = [r for r in rejections if r.label == "too-many-events"]
    assert len(excess) == 1 and str(4_000_000 - MAX_EVENTS_PER_MESSAGE) in excess[0].reason
    assert took < 1.0, f"{took:.2f} s for one hostile message"
    assert {r.label for r in rejections} <= set(LABELS)


def test_rejection_labels_come_from_the_fixed_list_whatever_the_input() -> None:
    inputs = [None, b"\xc1", codec.pack(5), codec.pack([]), codec.pack({"user": "u"}), codec.pack([{"x": "y" * 70_000}]),
              codec.pack({"user": "u", "video": "v", "ts": 1, "watch_ms": 1, "duration_ms": 0})]
    for value in inputs:
        _, rejections = decode_message(b"u", value, NOW)
        assert rejections and all(r.label in LABELS for r in rejections), (value, rejections)


def test_a_dead_letter_too_large_for_the_dlq_is_cut_with_a_marker() -> None:
    letter = codec.dead_letter("too large", "watch-events", 1, 2, b"u", b"x" * (codec.MAX_LETTER_VALUE_BYTES + 10))
    assert letter["truncated"] == codec.MAX_LETTER_VALUE_BYTES + 10 and len(letter["value"]) == codec.MAX_LETTER_VALUE_BYTES
    assert "truncated" not in codec.dead_letter("small", "watch-events", 1, 2, b"u", b"x")


@pytest.mark.parametrize("record, why", [
    ({"vector": codec.vec_to_bin(np.full(D, np.nan, np.float32))}, "NaN"),
    ({"vector": b"\x00" * (4 * D + 4)}, "multiple"),
    ({"vector": codec.vec_to_bin(np.ones(D, np.float32)), "interests": codec.vec_to_bin(np.ones(2 * D, np.float32)),
      "interest_weights": [0.5]}, "interest_weights"),
    ({"vector": codec.vec_to_bin(np.ones(D, np.float32)), "interests": codec.vec_to_bin(np.ones(D, np.float32)),
      "interest_weights": [float("nan")]}, "finite"),
    ({"vector": "abc"}, "float32"),
    ({}, "one"),
])
def test_the_client_refuses_a_malformed_user_record_with_a_reason(record: dict, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        user_queries(record, D, 0.7)


def test_the_item_tower_dead_letters_a_non_finite_output_instead_of_publishing_it() -> None:
    from streams.item_tower import ItemTower

    class Session:
        def run(self, names, feeds):
            out = np.ones((len(feeds["text"]), D), np.float32)
            out[1, 0] = np.nan
            return [out]

    bundle = SimpleNamespace(version="b1", manifest=SimpleNamespace(dim=D, text_dim=2, visual_dim=2),
                             sessions={"item_tower": Session()})
    tower = ItemTower(SimpleNamespace(bundle=bundle), None, "item-vectors", None, None)
    features = [(("v0", np.zeros(2), np.zeros(2), 1), SimpleNamespace(topic="item-features", partition=0, offset=0,
                                                                       key=b"v0", value=b"f0")),
                (("v1", np.zeros(2), np.zeros(2), 1), SimpleNamespace(topic="item-features", partition=0, offset=1,
                                                                       key=b"v1", value=b"f1"))]
    letters: list = []
    rows = tower._embedded(bundle, features, letters)
    assert [codec.unpack(v)["video"] for _, v, _ in rows] == ["v0"]
    assert len(letters) == 1 and letters[0].label == "item-tower-output" and letters[0].offset == 1


@pytest.mark.parametrize("name", ["../outside.bin", "/etc/passwd", "a/../../x", ""])
def test_file_names_from_manifests_stay_inside_their_folder(tmp_path, name: str) -> None:
    from dreamstream.checksums import inside

    with pytest.raises(ValueError):
        inside(tmp_path / "v1", name)
    assert inside(tmp_path / "v1", "shard-0.faiss") == tmp_path / "v1" / "shard-0.faiss"


def test_current_naming_a_path_outside_the_index_dir_is_refused(tmp_path) -> None:
    from dreamstream.index.manifest import IndexCorruptError
    from dreamstream.index.publish import read_current

    (tmp_path / "CURRENT").write_text("../../elsewhere")
    with pytest.raises(IndexCorruptError, match="not a version folder"):
        read_current(tmp_path)


def test_a_bundle_manifest_listing_a_file_outside_its_folder_is_refused(bundle_dir, tmp_path) -> None:
    import json
    import shutil

    from dreamstream.bundle import BundleError, verify_bundle

    copy = tmp_path / bundle_dir.name
    shutil.copytree(bundle_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["../../secret"] = {"sha256": "0" * 64}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="outside"):
        verify_bundle(copy)


def test_a_bad_vector_after_a_good_one_in_one_fetch_keeps_the_good_one() -> None:
    refused: list[str] = []
    table = ItemTable(Settings(), "item-vectors", dim=lambda: D, on_refused=refused.append)
    table.apply(b"v", vector_value(np.ones(D)))
    table.apply(b"w", vector_value(np.ones(D)))
    table.apply(b"v", vector_value(np.arange(D, dtype=np.float32) + 1))
    table.apply(b"v", hostile_vectors()["nan"])
    table.apply(b"w", None)
    table.flush()
    assert refused == ["bad-vector"]
    want = np.arange(D, dtype=np.float32) + 1
    np.testing.assert_allclose(table.get("v"), want / np.linalg.norm(want), rtol=1e-6)
    assert table.get("w") is None
