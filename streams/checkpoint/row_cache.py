"""User rows the worker computed but has not made durable yet: the newest per user, written once per commit.

Writing every touched row to the changelog after every batch, and waiting
for the broker before the batch after next, made the broker's ingest of
whole-state rows (~4 KB each) part of every batch's cycle: at half the
worker's maximum rate the cycle grew to ~400 ms, most of it waiting for
acknowledgements. Exactness does not need a row per batch, only that the
rows behind an offset are durable before that offset is committed. So, as
Kafka Streams' record cache does, rows stay here between commits: the
next batches read them from here, a user touched by several batches is
written once, and a *flush* writes them all, in the background, every
``DREAMSTREAM_COMMIT_INTERVAL_S`` (or sooner when the cache is full).

A flush covers exactly what was computed before it began: its rows, the
records and dead letters handed to the producer with them, and the
watch-events offsets behind them. Once its rows and those deliveries are
acknowledged, the offsets can be committed. One flush is in flight at a
time, so the changelog receives a user's rows in order.

A batch's rows are *staged* until its records are handed over: a flush
never takes the rows of a batch that was interrupted in between (a
cancelled shutdown), since making them durable would make a replay skip
events whose records never left.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streams.domain.state import UserState

MAX_CACHED_ROWS = 32_768  # flush early beyond this many users (~140 MB of rows): bounds memory on huge user bases


@dataclass
class Flush:
    """The rows, deliveries and offsets one flush makes durable."""

    rows: dict[bytes, tuple[UserState, int]]  # user key -> (newest state, changelog partition)
    deliveries: list[Any]  # futures of the records and dead letters sent with these rows
    offsets: dict[int, int]  # watch-events partition -> next offset covered


@dataclass
class RowCache:
    """The batch in hand (``staged``), rows since the last flush began (``dirty``), the flush in flight (``flushing``)."""

    staged: dict[bytes, tuple[UserState, int]] = field(default_factory=dict)
    dirty: dict[bytes, tuple[UserState, int]] = field(default_factory=dict)
    flushing: dict[bytes, tuple[UserState, int]] = field(default_factory=dict)
    deliveries: list[Any] = field(default_factory=list)
    offsets: dict[int, int] = field(default_factory=dict)

    def get(self, key: bytes) -> UserState | None:
        """The user's newest state not yet in the table, if any."""
        hit = self.staged.get(key) or self.dirty.get(key) or self.flushing.get(key)
        return hit[0] if hit is not None else None

    def put(self, key: bytes, state: UserState, partition: int) -> None:
        """A row of the batch in hand: readable now, flushed only once the batch is handed over."""
        self.staged[key] = (state, partition)

    def handed_over(self, deliveries: list[Any], last: dict[int, int]) -> None:
        """A batch's deliveries are with the producer and its rows are here: its offsets are covered.

        ``last``: each partition's last offset in the batch
        (``streams.kafka.feed.last_offsets``). A partition never goes back: were it
        read again from an earlier offset, the commit stays where it was.
        """
        self.dirty.update(self.staged)
        self.staged = {}
        self.deliveries.extend(deliveries)
        for partition, offset in last.items():
            self.offsets[partition] = max(self.offsets.get(partition, 0), offset + 1)

    def full(self) -> bool:
        return len(self.dirty) + len(self.staged) >= MAX_CACHED_ROWS

    def pending(self) -> bool:
        """Is there anything a flush would write or commit?"""
        return bool(self.dirty or self.deliveries or self.offsets)

    def begin_flush(self) -> Flush:
        """Everything computed so far becomes one flush; the rows stay readable until it is done."""
        flush = Flush(self.dirty, self.deliveries, self.offsets)
        self.flushing, self.dirty, self.deliveries, self.offsets = self.dirty, {}, [], {}
        return flush

    def end_flush(self) -> None:
        """The flush's rows are in the table now."""
        self.flushing = {}

    def clear(self) -> None:
        """Forget everything not durable (the feed is rewound to the last commit, or released)."""
        self.staged, self.dirty, self.flushing, self.deliveries, self.offsets = {}, {}, {}, [], {}
