"""The feed's pure helpers over a batch of records: what it covers, and how old its oldest event is."""
from __future__ import annotations

from collections import namedtuple

from streams.kafka.feed import last_offsets, oldest_timestamp

Record = namedtuple("Record", "partition offset timestamp")


def test_last_offsets_are_each_partitions_furthest() -> None:
    batch = [Record(0, 5, 1), Record(1, 9, 1), Record(0, 6, 1), Record(1, 10, 1)]
    assert last_offsets(batch) == {0: 6, 1: 10}


def test_the_oldest_timestamp_is_the_earliest_of_any_partition_and_ignores_records_without_one() -> None:
    batch = [Record(0, 5, 1_700_000_000_500), Record(1, 9, 1_700_000_000_100), Record(0, 6, -1),
             Record(1, 10, None)]
    assert oldest_timestamp(batch) == 1_700_000_000_100
    assert oldest_timestamp([Record(0, 1, -1)]) is None
    assert oldest_timestamp([]) is None
