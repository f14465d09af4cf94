"""Batch caps and flush request sizes follow the lag: small while caught up, growing with a backlog up to batch_size."""
from __future__ import annotations

from types import SimpleNamespace

from streams.checkpoint.flush_pacing import FLUSH_CHUNK_BYTES
from streams.kafka.batch_sizing import FLUSH_CHUNK_CAUGHT_UP, BatchSizing, total_lag


def test_caught_up_batches_are_small_and_a_backlog_grows_them_up_to_the_largest() -> None:
    s = BatchSizing(smallest=1024, largest=8192)
    assert s.records(0) == s.records(1) == s.records(1024) == 1024  # caught up
    assert s.records(1025) == 2048 and s.records(3000) == 4096  # behind: the next power of two above the lag
    assert s.records(8192) == s.records(10**9) == 8192  # never past batch_size
    assert all(s.records(lag) >= min(lag, 8192) for lag in range(0, 20000, 7))  # never less than what is waiting


def test_a_batch_size_below_the_caught_up_size_still_bounds_every_batch() -> None:
    s = BatchSizing(smallest=1024, largest=100)
    assert s.records(0) == 100 and s.records(5000) == 100


def test_flush_requests_are_small_while_caught_up_and_full_while_behind() -> None:
    s = BatchSizing(smallest=1024, largest=8192)
    assert s.flush_chunk_bytes(10) == FLUSH_CHUNK_CAUGHT_UP < FLUSH_CHUNK_BYTES
    assert s.flush_chunk_bytes(50_000) == FLUSH_CHUNK_BYTES


def test_lag_sums_the_owned_partitions_and_an_unfetched_one_counts_as_a_backlog() -> None:
    ends = {0: 100, 1: 50}

    def feed(owned: set[int], next_offsets: dict[int, int]) -> SimpleNamespace:
        return SimpleNamespace(owned=owned, next_offsets=next_offsets, highwater=ends.get)

    assert total_lag(feed({0, 1}, {0: 90, 1: 50})) == 10
    assert total_lag(feed({0, 1}, {0: 120, 1: 50})) == 0  # a stale end below the position: no negative lag
    assert total_lag(feed({0, 1, 2}, {0: 90, 1: 50, 2: 0})) >= 8192  # partition 2 not fetched yet: large
    assert total_lag(feed(set(), {})) == 0
