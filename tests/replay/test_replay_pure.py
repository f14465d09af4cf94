"""The pure parts of replay: row choice, order, pacing, synthesized watch times, dead letter -> record."""
from __future__ import annotations

import numpy as np
import pytest

from dreamstream import codec
from dreamstream.data.recbole import load_dataset
from dreamstream.replay import (SYNTH_DURATION_MS, Pace, ReplayError, event_values, paced, parse_time,
                                redrive_request, select_rows, time_order, watch_times)


def test_time_order_is_stable_on_ties():
    ts = np.array([5.0, 1.0, 5.0, 1.0, 3.0])
    assert time_order(ts, np.arange(5)).tolist() == [1, 3, 4, 0, 2]
    assert time_order(ts, np.array([2, 0, 4])).tolist() == [4, 0, 2]  # ties keep row order even if given unsorted


def test_select_rows_orders_by_time_then_row_and_filters_range(tmp_path, write_inter, mini_rows):
    ds = load_dataset(write_inter(tmp_path / "d", mini_rows))
    rows = select_rows(ds)
    assert len(rows) == len(mini_rows)
    keys = list(zip(ds.timestamp[rows], rows))
    assert keys == sorted(keys)
    since, until = 1_700_000_020, 1_700_000_050
    window = select_rows(ds, since=since, until=until)
    assert window.size and np.all((ds.timestamp[window] >= since) & (ds.timestamp[window] < until))
    assert set(window) == set(np.flatnonzero((ds.timestamp >= since) & (ds.timestamp < until)))


def test_parts_partition_the_kept_users_rows(tmp_path, write_inter, mini_rows):
    ds = load_dataset(write_inter(tmp_path / "d", mini_rows))
    train, held = select_rows(ds, "train"), select_rows(ds, "heldout")
    assert not set(train) & set(held)
    # every held-out row of a user comes after all of that user's training rows
    for u in np.unique(ds.user[held]):
        assert ds.timestamp[held[ds.user[held] == u]].min() >= ds.timestamp[train[ds.user[train] == u]].max()
    with pytest.raises(ReplayError, match="--part"):
        select_rows(ds, "test")


def test_event_values_encode_the_design_fields(tmp_path, write_inter, mini_rows):
    ds = load_dataset(write_inter(tmp_path / "d", mini_rows))
    row = int(select_rows(ds)[0])
    key, value, ts_ms = next(event_values(ds, np.array([row])))
    decoded = codec.unpack(value)
    assert key == ds.user_ids[ds.user[row]].encode()
    assert decoded == {"user": ds.user_ids[ds.user[row]], "video": ds.item_ids[ds.item[row]],
                       "ts": int(ds.timestamp[row] * 1000), "watch_ms": int(ds.columns["watch_ms"][row]),
                       "duration_ms": int(ds.columns["duration_ms"][row])}
    assert ts_ms == decoded["ts"]


def test_missing_watch_columns_become_full_plays(tmp_path, write_inter):
    rows = [("a", "x", 4.0, 10), ("a", "y", 0.0, 11), ("b", "x", 1.0, 12)]
    ds = load_dataset(write_inter(tmp_path / "d", rows, watch=False))
    watch, duration = watch_times(ds)
    assert duration.tolist() == [SYNTH_DURATION_MS] * 3
    assert watch.tolist() == [SYNTH_DURATION_MS, 0, SYNTH_DURATION_MS]  # rating <= 0 is a skip


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


@pytest.mark.parametrize("pace, due", [
    (Pace(rate=10), [0.0, 0.1, 0.2, 0.3]),
    (Pace(speedup=1000), [0.0, 0.0, 2.0, 5.0]),  # recorded gaps 0, 2000 s, 5000 s (ms here / 1000)
    (Pace(), [0.0, 0.0, 0.0, 0.0]),
])
def test_paced_emits_each_event_when_due(pace, due):
    events = [(b"k", b"v", t) for t in (1_000_000, 1_000_000, 3_000_000, 6_000_000)]
    clock = FakeClock()
    emitted = []
    for event in paced(events, pace, clock=clock, sleep=clock.sleep):
        emitted.append(round(clock.now - 100.0, 6))
    assert emitted == due
    assert [e[2] for e in paced(events, pace, clock=clock, sleep=clock.sleep)] == [e[2] for e in events]


def test_pace_rejects_bad_arguments():
    with pytest.raises(ReplayError, match="not both"):
        Pace(rate=1, speedup=2)
    with pytest.raises(ReplayError, match="> 0"):
        Pace(rate=0)


def test_parse_time_accepts_epoch_and_iso():
    assert parse_time("1700000000") == 1_700_000_000.0
    assert parse_time("2024-01-01") == 1_704_067_200.0
    assert parse_time("2024-01-01T01:00:00+01:00") == 1_704_067_200.0
    assert parse_time(None) is None
    with pytest.raises(ReplayError, match="ISO"):
        parse_time("yesterday")


def test_redrive_request_returns_the_original_bytes():
    letter = codec.pack(codec.dead_letter("unknown video v9", "p.watch-events", 3, 41, b"u1", b"\x81\xa1a\x01"))
    request = redrive_request(letter)
    assert (request.topic, request.key, request.value, request.partition) == ("p.watch-events", b"u1", b"\x81\xa1a\x01", None)
    assert redrive_request(letter, reason_contains="VIDEO") is not None
    assert redrive_request(letter, reason_contains="schema") is None


def test_redrive_request_keeps_partition_of_unkeyed_letters_and_rejects_garbage():
    letter = codec.pack(codec.dead_letter("bad", "t", 2, 0, None, b"xx"))
    assert redrive_request(letter).partition == 2
    with pytest.raises(ReplayError, match="msgpack"):
        redrive_request(b"\xc1")
    with pytest.raises(ReplayError, match="dead letter"):
        redrive_request(codec.pack({"reason": "no topic"}))
    with pytest.raises(ReplayError, match="expected bin"):
        redrive_request(codec.pack({"topic": "t", "key": "text", "value": b""}))


def test_a_letter_is_only_re_sent_to_an_input_topic_and_never_when_its_value_was_cut():
    inputs = frozenset({"p.watch-events", "p.item-features"})
    ok = codec.pack(codec.dead_letter("unknown video", "p.watch-events", 0, 1, b"u", b"v"))
    assert redrive_request(ok, inputs=inputs).topic == "p.watch-events"
    hostile = codec.pack(codec.dead_letter("x", "p.item-vectors", 0, 1, b"v1", b"\x00" * 8))
    with pytest.raises(ReplayError, match="not an input topic"):
        redrive_request(hostile, inputs=inputs)
    cut = codec.pack(codec.dead_letter("too big", "p.watch-events", 3, 9, b"u", b"x" * (codec.MAX_LETTER_VALUE_BYTES + 1)))
    with pytest.raises(ReplayError, match="partition 3 offset 9"):
        redrive_request(cut, inputs=inputs)


def test_re_driving_onto_shared_inputs_names_the_other_namespaces_and_needs_yes(tmp_path):
    """Issue 27 #3: one namespace's letters back on watch-events were applied again by every other namespace."""
    from dreamstream.replay import check_shared_inputs
    from dreamstream.serving import switch_serving
    from dreamstream.settings import Settings

    settings = Settings(index_dir=tmp_path / "index", state_dir=tmp_path / "state")
    assert check_shared_inputs(settings, yes=False) == []  # the default namespace alone: nobody sees it twice
    (tmp_path / "index").mkdir()
    switch_serving(tmp_path / "index", "v2")  # v2 serves, the default namespace is previous
    (tmp_path / "state" / "rollout" / "v3").mkdir(parents=True)
    with pytest.raises(ReplayError, match=r"v2, v3 will see each event again.*--yes"):
        check_shared_inputs(settings, yes=False)
    assert check_shared_inputs(settings, yes=True) == ["v2", "v3"]
    assert check_shared_inputs(settings.in_namespace("v2"), yes=True) == ["", "v3"]
    with pytest.raises(ReplayError, match=r"\(default\), v3"):
        check_shared_inputs(settings.in_namespace("v2"), yes=False)


def test_a_letter_with_a_cut_key_is_not_re_driven():
    letter = codec.pack(codec.dead_letter("key", "p.watch-events", 0, 1, b"k" * 5000, b"v"))
    with pytest.raises(ReplayError, match="5000-byte key"):
        redrive_request(letter, inputs=frozenset({"p.watch-events"}))
