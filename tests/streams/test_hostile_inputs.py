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


def test_a_stray_narrow_record_first_does_not_set_the_index_width() -> None:
    """Issue 27 #2: the first valid record used to fix the width; one 2-d record made a 1-item 2-d index."""
    store, stats = ItemStore(shards=2, dim=D), ApplyStats()
    apply_records(store, [(b"stray", vector_value(np.ones(2))), (b"a", vector_value(np.ones(D))),
                          (b"b", vector_value(np.ones(D + 3)))], stats)
    assert stats.puts == 1 and stats.rejected == 2 and "a" in store and "stray" not in store and store.dim == D
    with pytest.raises(ValueError, match="width"):
        apply_records(ItemStore(shards=2), [(b"a", vector_value(np.ones(D)))], ApplyStats())


def test_the_index_width_comes_from_the_namespaces_bundle_or_the_setting(bundle_dir, tmp_path) -> None:
    import shutil

    from dreamstream.bundle import read_manifest
    from dreamstream.errors import UserError
    from dreamstream.index.width import index_width

    models = tmp_path / "models"
    shutil.copytree(bundle_dir, models / bundle_dir.name)
    dim = read_manifest(bundle_dir).dim
    assert index_width(Settings(model_dir=models)) == dim
    assert index_width(Settings(model_dir=models, namespace=bundle_dir.name)) == dim
    assert index_width(Settings(model_dir=models, index_dim=3)) == 3
    with pytest.raises(UserError, match="index-dim"):
        index_width(Settings(model_dir=models, namespace="not-there"))
    with pytest.raises(UserError, match="index-dim"):
        index_width(Settings(model_dir=tmp_path / "empty"))


def test_a_version_of_another_width_than_the_serving_one_is_never_published(tmp_path) -> None:
    from dreamstream.index.builder import BuildParams, build_version
    from dreamstream.index.publish import read_current
    from dreamstream.index.service import publish_version

    rng = np.random.default_rng(0)
    wide = ItemStore(shards=1, dim=D)
    wide.put_many([f"v{i}" for i in range(20)], rng.standard_normal((20, D)))
    serving = publish_version(build_version(wide, tmp_path, BuildParams()), tmp_path, 0.0).manifest
    narrow = ItemStore(shards=1, dim=2)
    narrow.put("stray", np.ones(2))
    outcome = publish_version(build_version(narrow, tmp_path, BuildParams(), previous=serving), tmp_path, 0.0,
                              serving=serving)
    assert not outcome.published and "2-d" in outcome.reason and read_current(tmp_path) == serving.version
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [serving.version]


def test_a_600_kb_key_is_one_letter_under_the_limit_with_its_sizes() -> None:
    """Issue 27 #1: the key was copied whole into the letter and used as its record key: 1.2 MB, refused forever."""
    from streams.kafka.output import DeadLetter

    key = b"k" * 600_000
    value = codec.pack({"user": "u", "video": "v", "ts": 1, "watch_ms": 1, "duration_ms": 2, "pad": "x" * 600_000})
    events, rejections = decode_message(key, value, NOW)
    assert not events and [r.label for r in rejections] == ["key-too-large"]
    letter = DeadLetter(rejections[0].reason, "watch-events", 0, 7, key, rejections[0].value, rejections[0].label)
    assert len(letter.record_key) + len(letter.packed()) <= codec.MAX_LETTER_BYTES
    unpacked = codec.unpack(letter.packed())
    assert unpacked["key_truncated"] == 600_000 and unpacked["truncated"] == len(value)
    assert unpacked["key"] == letter.record_key == key[:codec.MAX_LETTER_KEY_BYTES]


def test_an_array_of_1000_events_under_a_400_kb_key_is_one_letter_not_a_thousand() -> None:
    """Issue 27 #1: each event's letter copied the key: 1,000 letters, ~800 MB held for one batch."""
    key = b"u" * 400_000
    value = codec.pack([{"user": "u", "video": "v", "ts": 1, "watch_ms": 1, "duration_ms": 2}] * 1000)
    events, rejections = decode_message(key, value, NOW)
    assert not events and len(rejections) == 1 and rejections[0].value == value


@pytest.mark.parametrize("key_bytes, value_bytes", [(0, 0), (300, 10), (5_000, 300_000), (2_000_000, 5_000_000)])
def test_every_letter_is_under_the_limit_whatever_its_key_and_value(key_bytes: int, value_bytes: int) -> None:
    letter = codec.dead_letter("r" * 5000, "watch-events", 3, 2**62, b"k" * key_bytes, b"v" * value_bytes)
    assert len(codec.letter_key(b"k" * key_bytes)) + len(codec.pack(letter)) <= codec.MAX_LETTER_BYTES
    assert ("key_truncated" in letter) == (key_bytes > codec.MAX_LETTER_KEY_BYTES)


def test_a_letter_the_broker_refuses_for_good_is_counted_not_retried(monkeypatch) -> None:
    """Issue 27 #1: a refused letter failed the flush, which redid the batch, whose letter failed again, forever."""
    import asyncio

    from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

    from streams.kafka import output as out
    from streams.kafka.batch_send import Sent
    from streams.ops.metrics import WorkerMetrics

    async def run(error: Exception) -> list:
        async def refused(producer, topic, rows):
            future = asyncio.get_running_loop().create_future()
            future.set_exception(error)
            return [Sent(topic, 0, len(list(rows)), future)]

        monkeypatch.setattr(out, "send_records", refused)
        sink = out.Output(lambda: None, "user-embeddings", "watch-events-dlq", metrics)
        letter = out.DeadLetter("r", "watch-events", 0, 1, b"u", b"v", "invalid-event")
        return await asyncio.gather(*await sink.send({}, [letter, letter]), return_exceptions=True)

    metrics = WorkerMetrics()
    assert asyncio.run(run(MessageSizeTooLargeError())) == [None]
    assert metrics.registry.get_sample_value("dreamstream_dead_letters_unwritable_total",
                                             {"error": "MessageSizeTooLargeError"}) == 2
    assert isinstance(asyncio.run(run(KafkaConnectionError()))[0], KafkaConnectionError)  # transient: still redone


def test_a_huge_item_vectors_key_is_refused_by_the_indexer_and_the_item_table() -> None:
    store, stats = ItemStore(shards=2, dim=D), ApplyStats()
    apply_records(store, [(b"k" * 600_000, vector_value(np.ones(D))), (b"k" * 600_000, None)], stats)
    assert stats.rejected == 2 and len(store) == 0
    refused: list[str] = []
    table = ItemTable(Settings(), "item-vectors", dim=lambda: D, on_refused=refused.append)
    table.apply(b"k" * 600_000, vector_value(np.ones(D)))
    assert refused == ["unreadable"] and len(table) == 0


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
    tower = ItemTower(SimpleNamespace(bundle=bundle), None, "item-vectors", None, None, Settings(live_gamma=0.0))
    features = [(("v0", np.zeros(2), np.zeros(2), 1), SimpleNamespace(topic="item-features", partition=0, offset=0,
                                                                       key=b"v0", value=b"f0")),
                (("v1", np.zeros(2), np.zeros(2), 1), SimpleNamespace(topic="item-features", partition=0, offset=1,
                                                                       key=b"v1", value=b"f1"))]
    letters: list = []
    rows, towers = tower._embedded(bundle, features, letters)
    assert [codec.unpack(v)["video"] for _, v, _ in rows] == ["v0"] and towers == []
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


def test_a_refused_bundle_is_retried_when_its_files_change_and_not_before(bundle_dir, tmp_path, monkeypatch) -> None:
    """Issue 27, finding 10: on main a bundle seen half-copied was refused by name until restart."""
    import os
    import shutil

    from dreamstream import bundle as bundles
    from streams.ops.reload import BundleHolder

    copy = tmp_path / "models" / "v29990101-000000"
    shutil.copytree(bundle_dir, copy)
    items = copy / "items.npy"
    whole = items.read_bytes()
    items.write_bytes(whole[: len(whole) // 2])  # seen half-copied
    loads: list = []
    real = bundles.load_bundle
    monkeypatch.setattr(bundles, "load_bundle", lambda path: (loads.append(path), real(path))[1])
    holder = BundleHolder(tmp_path / "models")
    holder._maybe_switch()
    assert holder.bundle is None and list(holder.refused) == [copy.name] and len(loads) == 1
    holder._maybe_switch()
    holder._maybe_switch()
    assert len(loads) == 1, "an unchanged refused bundle was verified again"
    items.write_bytes(whole)  # the copy finishes
    os.utime(items, ns=(items.stat().st_atime_ns, items.stat().st_mtime_ns + 1_000_000))
    holder._maybe_switch()
    assert holder.bundle is not None and holder.bundle.version == bundles.read_manifest(copy).version


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
