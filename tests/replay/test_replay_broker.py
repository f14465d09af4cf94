"""Replay and dead-letter re-drive through the private tansu broker."""
from __future__ import annotations

import time

import pytest
from kafka import KafkaProducer

from dreamstream import codec
from dreamstream.data.recbole import load_dataset
from dreamstream.replay import Pace, redrive_dead_letters, replay_dataset, select_rows
from dreamstream.topics import DLQ, WATCH_EVENTS, create_topics


def murmur2_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner, as the Java client (and Faust's table changelog) computes it."""
    from kafka.partitioner.default import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


def test_replay_puts_events_in_event_time_order_per_partition(make_settings, tmp_path, write_inter, mini_rows,
                                                              read_topic):
    settings = make_settings(partitions=4)
    create_topics(settings)
    ds = load_dataset(write_inter(tmp_path / "d", mini_rows))
    rows = select_rows(ds)
    assert replay_dataset(settings, ds, rows, progress=False) == len(mini_rows)

    records = read_topic(settings, settings.topic(WATCH_EVENTS), len(mini_rows))
    assert len(records) == len(mini_rows)
    expected = [codec.unpack(v) for _, v, _ in __import__("dreamstream.replay").replay.event_values(ds, rows)]
    rank = {(e["user"], e["video"], e["ts"]): i for i, e in enumerate(expected)}
    for p in range(4):
        mine = sorted((r for r in records if r.partition == p), key=lambda r: r.offset)
        assert mine, f"partition {p} got nothing: keys are not spread by the partitioner"
        positions = [rank[(v["user"], v["video"], v["ts"])] for v in map(lambda r: codec.unpack(r.value), mine)]
        assert positions == sorted(positions), f"partition {p} is not in event-time order"
        for r in mine:
            assert r.partition == murmur2_partition(r.key, 4)
            assert r.key == codec.unpack(r.value)["user"].encode()


def test_rate_paces_the_replay(make_settings, tmp_path, write_inter, mini_rows):
    settings = make_settings(partitions=2)
    create_topics(settings)
    ds = load_dataset(write_inter(tmp_path / "d", mini_rows))
    rows = select_rows(ds)[:40]
    started = time.monotonic()
    replay_dataset(settings, ds, rows, Pace(rate=100), progress=False)
    elapsed = time.monotonic() - started
    # the 40th event is due 0.39 s after the first: not faster than that, and not absurdly slower
    assert 0.35 <= elapsed < 15, elapsed


def test_dead_letters_go_back_with_their_original_bytes_once(make_settings, read_topic):
    settings = make_settings(partitions=2)
    create_topics(settings)
    source = settings.topic(WATCH_EVENTS)
    original_key, original_value = b"user-42", codec.pack({"user": "user-42", "video": "v-new", "ts": 1,
                                                           "watch_ms": 5, "duration_ms": 10})
    letters = [codec.dead_letter("unknown video v-new", source, 1, 17, original_key, original_value),
               codec.dead_letter("bad msgpack", source, 0, 3, b"user-7", b"\xc1garbage")]
    prod = KafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    for letter in letters:
        prod.send(settings.topic(DLQ), key=letter["key"], value=codec.pack(letter))
    prod.flush()
    prod.close()

    assert redrive_dead_letters(settings, reason_contains="unknown video", progress=False).sent == 1
    back = read_topic(settings, source, 1)
    assert [(r.key, r.value) for r in back] == [(original_key, original_value)]
    assert back[0].partition == murmur2_partition(original_key, 2)

    # the group remembers: nothing is re-driven twice, unless rewound
    assert redrive_dead_letters(settings, progress=False).sent == 0
    assert redrive_dead_letters(settings, from_beginning=True, progress=False).sent == 2
    assert len(read_topic(settings, source, 3)) == 3


def test_a_letter_whose_re_send_fails_is_not_committed_and_comes_back_next_run(make_settings, read_topic, monkeypatch):
    """kafka-python's flush() only logs a failed batch: each future is checked, and the commit stops before a failure."""
    import dreamstream.replay as replay

    settings = make_settings(partitions=1)
    create_topics(settings)
    source = settings.topic(WATCH_EVENTS)
    letters = [codec.dead_letter(f"unknown video v{i}", source, 0, i, b"u", codec.pack({"i": i})) for i in range(3)]
    prod = KafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    for letter in letters:
        prod.send(settings.topic(DLQ), key=letter["key"], value=codec.pack(letter))
    prod.flush()
    prod.close()

    real = replay.producer

    class Failing:
        """The real producer, except that the second letter's delivery fails."""

        def __init__(self, inner):
            self.inner, self.sends = inner, 0

        def send(self, *args, **kwargs):
            self.sends += 1
            future = self.inner.send(*args, **kwargs)
            if self.sends == 2:
                class Failed:
                    def get(self, timeout=None):
                        raise TimeoutError("broker did not acknowledge")
                return Failed()
            return future

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(replay, "producer", lambda s: Failing(real(s)))
    with pytest.raises(replay.ReplayError, match="1 letters could not be re-sent"):
        redrive_dead_letters(settings, progress=False)
    monkeypatch.setattr(replay, "producer", real)
    assert redrive_dead_letters(settings, progress=False).sent == 2  # the failed letter and the one after it, again


def put_letters(settings, letters: list[dict]) -> None:
    prod = KafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    for letter in letters:
        prod.send(settings.topic(DLQ), key=letter["key"], value=codec.pack(letter))
    prod.flush()
    prod.close()


def test_a_null_letter_is_skipped_and_counted_and_nothing_is_sent_twice(make_settings, read_topic):
    """Issue 27 #3: a letter of neither key nor value made send raise; close() flushed the ones before, uncommitted."""
    settings = make_settings(partitions=1)
    create_topics(settings)
    source = settings.topic(WATCH_EVENTS)
    put_letters(settings, [codec.dead_letter("unknown video", source, 0, 1, b"u", b"\x01"),
                           codec.dead_letter("value is null", source, 0, 2, None, None),
                           codec.dead_letter("unknown video", source, 0, 3, b"u", b"\x03")])
    done = redrive_dead_letters(settings, progress=False)
    assert (done.sent, done.null, done.failed) == (2, 1, 0)
    again = redrive_dead_letters(settings, progress=False)
    assert (again.sent, again.null) == (0, 0)
    assert [r.value for r in read_topic(settings, source, 99, timeout_s=4)] == [b"\x01", b"\x03"]  # no duplicates


def test_a_send_refused_at_once_stops_the_run_and_nothing_after_it_is_sent(make_settings, read_topic, monkeypatch):
    """Issue 27 #3: a synchronous send error was not a counted failure, and close() flushed letters past it."""
    import dreamstream.replay as replay

    settings = make_settings(partitions=1)
    create_topics(settings)
    source = settings.topic(WATCH_EVENTS)
    put_letters(settings, [codec.dead_letter(f"unknown video v{i}", source, 0, i, b"u", bytes([i])) for i in range(4)])
    real = replay.producer

    class RefusesThird:
        def __init__(self, inner):
            self.inner, self.sends = inner, 0

        def send(self, *args, **kwargs):
            self.sends += 1
            if self.sends == 3:
                raise AssertionError("Need at least one: key or value")
            return self.inner.send(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(replay, "producer", lambda s: RefusesThird(real(s)))
    with pytest.raises(replay.ReplayError, match="1 letters could not be re-sent"):
        redrive_dead_letters(settings, progress=False)
    assert [r.value for r in read_topic(settings, source, 99, timeout_s=4)] == [b"\x00", b"\x01"]  # nor the fourth
    monkeypatch.setattr(replay, "producer", real)
    assert redrive_dead_letters(settings, progress=False).sent == 2  # the third and the fourth, once each
    assert [r.value for r in read_topic(settings, source, 99, timeout_s=4)] == [b"\x00", b"\x01", b"\x02", b"\x03"]
