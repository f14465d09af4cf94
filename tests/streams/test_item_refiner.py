"""Live refinement of new videos, the worker's side and the refiner's rows (no broker; the e2e test is
tests/streams/test_live_refinement_e2e.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dreamstream import codec
from dreamstream.dreamumm_ref import refined_vector
from dreamstream.settings import Settings
from streams.domain import refinement
from streams.domain.apply import apply_batch
from streams.domain.validate import Event
from streams.items.memory_store import MemoryItemStore

NOW = 1_700_000_000_000


def _store(bundle, live: list[str]) -> MemoryItemStore:
    store = MemoryItemStore()
    store.put(list(bundle.item_ids), np.asarray(bundle.items, np.float32))
    store.mark_live(live, [True] * len(live))
    return store


def test_watches_of_live_videos_carry_the_watchers_vector_before_the_watch(bundle) -> None:
    ids = list(bundle.item_ids)
    vec = dict(zip(ids, np.asarray(bundle.items, np.float64)))
    live = set(ids[:3])
    rng = np.random.default_rng(0)
    events = [Event(f"u{rng.integers(8)}", ids[rng.integers(12)], NOW + i * 1000, float(rng.uniform(0.1, 1.5)) * 10_000,
                    10_000.0, "watch", 0, i) for i in range(300)]
    s = Settings(cold_min_positive=0, half_life_s=math.inf)
    result = apply_batch({}, events, _store(bundle, sorted(live)), bundle, s)
    weights = s.engagement.weight([e.watch_ms for e in events], [e.duration_ms for e in events])
    expected = []
    sums: dict[str, np.ndarray] = {}
    for ev, w in zip(events, weights):
        before = sums.get(ev.user)
        if ev.video in live and before is not None and np.linalg.norm(before) > 0:
            expected.append((ev.offset, before / np.linalg.norm(before), w))
        sums[ev.user] = (before if before is not None else 0) + w * vec[ev.video]
    got = sorted((ev.offset, unit, w) for ev, unit, w in result.watchers)
    assert [g[0] for g in got] == [e[0] for e in expected] and len(got) > 20
    for (_, unit, w), (_, ref, ref_w) in zip(got, expected):
        np.testing.assert_allclose(unit, ref, atol=2e-3)  # the rows are stored in 16-bit block floating point
        assert w == pytest.approx(ref_w)


def test_a_batchs_watches_leave_in_source_order_though_its_waves_reorder_them(bundle) -> None:
    """Wave 0 holds each user's first event of the batch: u2's first watch (offset 3) is noted before u1's second
    (offset 2). Sent in that order, the refiner would take offset 2 for a replay of partition 0 and drop it."""
    ids = list(bundle.item_ids)
    events = [Event("u1", ids[5], NOW, 5_000.0, 10_000.0, "watch", 0, 0), Event("u2", ids[6], NOW, 5_000.0, 10_000.0,
                                                                                "watch", 0, 1),
              Event("u1", ids[0], NOW + 1, 5_000.0, 10_000.0, "watch", 0, 2),
              Event("u2", ids[0], NOW + 1, 5_000.0, 10_000.0, "watch", 0, 3)]
    stored = {"u2": apply_batch({}, events[1:2], _store(bundle, []), bundle, Settings()).states["u2"]}
    result = apply_batch(stored, [events[0], *events[2:]], _store(bundle, [ids[0]]), bundle, Settings())
    assert [ev.offset for ev, _, _ in result.watchers] == [3, 2], "the waves no longer reorder: rewrite this test"
    rows = refinement.watcher_rows(result.watchers, "s")
    assert [codec.unpack(value)["src"] for _, value in rows] == [[0, 2, 0], [0, 3, 0]]
    row = None
    for _, value in rows:
        row, outcome = refinement.apply(row, refinement.parse(value, bundle.manifest.dim))
        assert outcome == refinement.APPLIED


def test_nothing_is_reported_with_live_refinement_off_or_no_live_video(bundle) -> None:
    ids = list(bundle.item_ids)
    events = [Event("u1", ids[i % 2], NOW + i, 5_000.0, 10_000.0, "watch", 0, i) for i in range(10)]
    off = apply_batch({}, events, _store(bundle, ids[:2]), bundle, Settings(live_gamma=0.0))
    none_live = apply_batch({}, events, _store(bundle, []), bundle, Settings())
    on = apply_batch({}, events, _store(bundle, ids[:2]), bundle, Settings())
    assert off.watchers == [] and none_live.watchers == [] and len(on.watchers) == 9  # the first watch has no vector


def _watch(video: str, unit: np.ndarray, src: tuple[int, int, int], weight: float = 1.0, space: str = "m1") -> bytes:
    ev = Event("u", video, NOW, 1.0, 1.0, "watch", *src)
    return refinement.watcher_rows([(ev, unit, weight)], space)[0][1]


def _unit(x) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x)


def test_a_row_sums_each_watch_once_and_belongs_to_one_item_space() -> None:
    tower = codec.pack(codec.tower_record("v", _unit([1, 0, 0]), "m1", NOW))
    a, b = _unit([0, 1, 0]), _unit([0, 1, 1])
    row, outcome = refinement.apply(None, refinement.parse(_watch("v", a, (0, 5, 0)), 3))  # a watch before the tower
    assert outcome == refinement.APPLIED and row.tower is None
    for value, want in [(tower, refinement.STARTED), (_watch("v", b, (1, 2, 0), 0.5), refinement.APPLIED),
                        (_watch("v", a, (0, 5, 0)), refinement.REPLAY), (_watch("v", a, (0, 4, 9)), refinement.REPLAY),
                        (_watch("v", a, (0, 5, 1)), refinement.APPLIED),
                        (_watch("v", b, (1, 3, 0), space="m0"), refinement.OTHER_SPACE)]:
        row, outcome = refinement.apply(refinement.decode(refinement.encode(row)), refinement.parse(value, 3))
        assert outcome == want
    np.testing.assert_allclose(row.total, 2 * a + 0.5 * b, atol=1e-6)
    assert row.watchers == 3 and row.marks == {0: (5, 1), 1: (2, 0)}
    np.testing.assert_allclose(row.tower, [1, 0, 0])
    fresh, outcome = refinement.apply(row, refinement.parse(codec.pack(codec.tower_record("v", _unit([0, 0, 1]), "m2",
                                                                                          NOW)), 3))
    assert outcome == refinement.STARTED and fresh.space == "m2" and fresh.watchers == 0 and not fresh.total.any()


def test_the_refined_vector_is_the_evaluated_formula() -> None:
    tower, m, s = _unit([1, 0.2, 0]), _unit([0.5, 0.5, 0.5]), np.array([0.0, 2.0, 0.5])
    want = (tower - 0.4 * m + 0.1 * s) / np.linalg.norm(tower - 0.4 * m + 0.1 * s)
    np.testing.assert_allclose(refined_vector(tower, m, s, 0.4, 0.1), want, atol=1e-6)


@pytest.mark.parametrize("value, why", [
    (None, "null"), (b"\xc1", "msgpack"), (codec.pack({"kind": "other"}), "kind"),
    (codec.pack({"kind": "watch", "video": "v", "space": "m", "ts": 1}), "'user'"),
    (codec.pack({**codec.watcher_record("v", np.ones(3), 1.0, "m", 0, 1, 0, 1), "user": codec.vec_to_bin(np.ones(2))}),
     "expected 3-d"),
    (codec.pack({**codec.watcher_record("v", np.ones(3), 1.0, "m", 0, 1, 0, 1), "weight": float("nan")}), "weight"),
    (codec.pack({**codec.watcher_record("v", np.ones(3), 1.0, "m", 0, 1, 0, 1), "src": [0, -1, 0]}), "src"),
])
def test_an_unreadable_watchers_record_is_refused_with_a_reason(value, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        refinement.parse(value, 3)


def test_live_marks_follow_the_newest_record_and_survive_a_rocksdb_restart(tmp_path) -> None:
    pytest.importorskip("rocksdict")
    from streams.items.rocks_store import RocksItemStore

    store = RocksItemStore(tmp_path / "items", "item-vectors")
    store.put(["a", "b", "c"], np.eye(3, dtype=np.float32))
    store.mark_live(["a", "b", "c"], [True, True, False])
    store.mark_live(["b"], [False])  # a trained vector replaced the live one
    assert store.live_mask(["a", "b", "c", "x"]).tolist() == [True, False, False, False]
    store.close()
    again = RocksItemStore(tmp_path / "items", "item-vectors")
    assert again.live_mask(["a", "b", "c"]).tolist() == [True, False, False]
    again.close()


def test_only_marks_that_change_the_live_set_are_written() -> None:
    from streams.items.live_videos import LiveVideos

    live = LiveVideos()
    assert live.changes(["a", "b"], [False, False]) == [], "a catalogue of trained videos writes nothing"
    live.mark(live.changes(["a", "b"], [True, False]))
    assert live.changes(["a", "b", "c"], [True, False, False]) == [], "unchanged marks are not written again"
    assert live.changes(["a", "c"], [False, True]) == [("a", False), ("c", True)]
