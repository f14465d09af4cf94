"""The row cache and the catch-up: what a flush covers, what a replay holds back, when it is done."""
from __future__ import annotations

from types import SimpleNamespace

from streams.checkpoint.catch_up import CatchUp, uncommitted_limit
from streams.kafka.feed import last_offsets
from streams.checkpoint.row_cache import MAX_CACHED_ROWS, RowCache
from streams.domain.state import new_state


def msg(partition: int, offset: int) -> SimpleNamespace:
    return SimpleNamespace(partition=partition, offset=offset)


def test_newest_row_wins_and_stays_readable_while_flushing():
    cache = RowCache()
    old, new = new_state(4, 2, 3), new_state(4, 2, 3)
    old.seq, new.seq = 1, 2
    cache.put(b"u", old, 0)
    cache.handed_over(["f1"], last_offsets([msg(0, 5), msg(1, 2)]))
    flush = cache.begin_flush()
    assert flush.rows == {b"u": (old, 0)} and flush.deliveries == ["f1"] and flush.offsets == {0: 6, 1: 3}
    assert cache.get(b"u") is old  # in flight: still read from the cache, not the (older) table
    cache.put(b"u", new, 0)
    cache.handed_over([], {})
    assert cache.get(b"u") is new  # a newer batch overtakes the flush
    cache.end_flush()
    assert cache.get(b"u") is new and cache.pending()
    second = cache.begin_flush()
    assert second.rows == {b"u": (new, 0)} and second.offsets == {} and second.deliveries == []
    cache.end_flush()
    assert cache.get(b"u") is None and not cache.pending()


def test_a_batch_s_rows_are_flushed_only_once_the_batch_is_handed_over():
    cache = RowCache()
    st = new_state(4, 2, 3)
    cache.put(b"u", st, 0)
    assert cache.get(b"u") is st, "the batch's own later reads see it"
    assert not cache.pending() and cache.begin_flush().rows == {}, "an interrupted batch must never reach the changelog"
    cache.end_flush()
    cache.handed_over(["f"], {0: 4})
    assert cache.begin_flush().rows == {b"u": (st, 0)}
    cache.end_flush()
    cache.put(b"v", st, 1)
    cache.clear()  # the interrupted batch is dropped with everything since the last commit
    assert cache.get(b"v") is None and not cache.pending()


def test_offsets_covered_are_each_partitions_last_and_never_go_back():
    cache = RowCache()
    cache.handed_over([], last_offsets([msg(0, 5), msg(1, 2), msg(0, 6), msg(0, 7), msg(1, 3)]))
    cache.handed_over([], last_offsets([msg(0, 8)]))
    cache.handed_over([], {})  # a catch-up's held records: no messages of their own
    assert cache.begin_flush().offsets == {0: 9, 1: 4}
    cache.handed_over([], {2: 10})
    cache.handed_over([], {2: 4})  # a partition read again from an earlier offset: the commit does not go back
    assert cache.begin_flush().offsets == {2: 11}
    assert last_offsets([msg(3, 9), msg(3, 4)]) == {3: 4}  # out of order (the feed never is): less, never more
    assert last_offsets([]) == {}


def test_full_and_clear():
    cache = RowCache()
    st = new_state(2, 1, 2)
    for i in range(MAX_CACHED_ROWS):
        cache.put(str(i).encode(), st, 0)
    assert cache.full()
    cache.clear()
    assert not cache.full() and not cache.pending() and cache.get(b"1") is None


def test_catch_up_holds_the_newest_record_per_user():
    up = CatchUp.after({0: 100, 1: 7}, batch_size=10)
    assert up.targets == {0: 100 + uncommitted_limit(10), 1: 7 + uncommitted_limit(10)}
    up.hold({"a": b"a5", "b": b"b1"}, {"a": 5, "b": 1})
    up.hold({"a": b"a3"}, {"a": 3})  # a replay cut differently: an older seq after a newer one
    assert up.records() == {"a": b"a5", "b": b"b1"}


def test_catch_up_keeps_the_oldest_event_time_behind_its_held_records():
    up = CatchUp.after({0: 0}, batch_size=10)
    assert up.oldest_ms is None
    up.hold({"a": b"a1"}, {"a": 1}, 5_000)
    up.hold({}, {}, 1_000)  # a batch of dead letters only: nothing of it is held
    up.hold({"a": b"a2"}, {"a": 2}, 7_000)
    up.hold({"a": b"a2"}, {"a": 2}, None)  # no timestamps (CreateTime -1): nothing to go by
    assert up.oldest_ms == 5_000
    up.hold({"a": b"a2"}, {"a": 2}, 4_000)
    assert up.oldest_ms == 4_000


def test_catch_up_is_done_at_the_target_or_the_end_whichever_comes_first():
    up = CatchUp.after({0: 100, 1: 0}, batch_size=10)
    ends = {0: 120, 1: None}
    assert not up.done({0: 120, 1: 0}, ends.get)  # partition 1 not fetched yet: its end is unknown
    ends[1] = 1000
    assert not up.done({0: 120, 1: 40}, ends.get)
    assert up.done({0: 120, 1: uncommitted_limit(10)}, ends.get)  # partition 1 stops at its target, before its end
