"""The checkpoint: what the worker has computed but not made durable, and the one order that makes it durable.

A batch's output is *staged* here (:meth:`Checkpoint.stage`): its rows go
into the row cache (``streams.checkpoint.row_cache``), where the next
batches read them; its records and dead letters go to the producer at once
(or, while catching up, its records are held: ``streams.checkpoint.catch_up``);
the watch-events offsets it covers are noted. A *flush*
(:meth:`maybe_flush` starts one every commit interval, or early under
backpressure; :meth:`settle` runs one to the end) then makes them durable in
this order, and only this order:

1. the flush's rows to the changelog (``RowStore.write``), each request put
   into the table once the broker acknowledged it;
2. the deliveries of every record and dead letter staged before it, awaited;
3. the offsets behind them committed (``Feed.commit``).

Invariants (``tests/streams/test_checkpoint.py`` holds the checkpoint to each):

* **Commit follows durability.** An offset is committed only after the
  rows, records and dead letters of every event below it are acknowledged.
  A flush that fails (raises) commits nothing; the error surfaces at the
  next :meth:`maybe_flush` or :meth:`settle`, and the worker redoes from the
  last commit (:meth:`abort`, then :meth:`begin`).
* **An interrupted batch is never made durable.** Rows of a batch whose
  records did not all reach the producer (``stage`` cancelled while
  sending) stay staged and no flush takes them: were they durable, a replay
  would skip events whose records never left.
* **Nothing is committed while records are held.** During a catch-up no
  flush starts; when every partition is read to its target (or its end),
  the held records go to the producer and commits resume.
* **One flush at a time**, so the changelog receives a user's rows in order,
  and a row is readable (:meth:`get`) from the moment it is staged until it
  is in the table.
* **Bounded lead.** No partition runs further than ``uncommitted_limit``
  messages beyond its last commit (the bound a catch-up relies on):
  :meth:`maybe_flush` waits for a flush instead.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Coroutine, Mapping, Protocol, Sequence

from dreamstream.settings import Settings
from streams.checkpoint.catch_up import CatchUp, uncommitted_limit
from streams.checkpoint.flush_pacing import FlushPacer
from streams.checkpoint.row_cache import Flush, RowCache
from streams.domain.state import UserState

log = logging.getLogger("streams.worker")


class Feed(Protocol):
    """What the checkpoint needs of the watch-events reader (``streams.kafka.feed.PartitionFeed`` is one)."""

    committed: dict[int, int]
    next_offsets: dict[int, int]

    def highwater(self, partition: int) -> int | None: ...

    async def commit(self, offsets: dict[int, int]) -> bool: ...


class Output(Protocol):
    """Sends records and dead letters now; returns their delivery futures (``streams.kafka.output.Output``)."""

    async def send(self, records: Mapping[str, bytes], letters: list[Any],
                   watchers: Sequence[tuple[bytes, bytes]] = ()) -> list[Awaitable[Any]]: ...


class RowStore(Protocol):
    """Writes rows to the changelog, then into the table (``streams.kafka.changelog_rows.ChangelogRows``)."""

    async def write(self, rows: dict[bytes, tuple[UserState, int]], pause: Callable[[int], Awaitable[None]]
                    ) -> None: ...


class Checkpoint:
    """Staged output, the flush in flight and the catch-up of one worker; see the module docstring."""

    def __init__(self, feed: Feed, output: Output, rows: RowStore, settings: Settings,
                 observe_flush: Callable[[float, bool], None] | None = None,
                 observe_age: Callable[[int | None], float | None] | None = None) -> None:
        self.feed, self.output, self.rows, self.settings = feed, output, rows, settings
        self.cache = RowCache()
        self.catch_up: CatchUp | None = None
        self.flushing: asyncio.Future | None = None
        self.pacer = FlushPacer(settings.flush_spread * settings.commit_interval_s)
        self.last_flush = time.monotonic()
        self.observe_flush = observe_flush or (lambda seconds, committed: None)
        self.observe_age = observe_age or (lambda oldest_ms: None)

    # --- reading ----------------------------------------------------------------
    def get(self, key: bytes) -> UserState | None:
        """A user's newest row not yet in the table, if any."""
        return self.cache.get(key)

    @property
    def interrupted(self) -> bool:
        """Was a batch staged without all its output reaching the producer (a cancellation inside ``stage``)?"""
        return bool(self.cache.staged)

    # --- a batch ----------------------------------------------------------------
    def begin(self, resumed: dict[int, int]) -> None:
        """Start from these committed offsets: replay with records held until the previous run's reach; none: plain."""
        self.catch_up = CatchUp.after(resumed, self.settings.batch_size) if resumed else None
        if self.catch_up is not None:
            log.info("catching up partitions=%s up_to=%s", sorted(resumed), self.catch_up.targets)

    async def stage(self, states: Mapping[str, UserState], records: Mapping[str, bytes], seqs: Mapping[str, int],
                    letters: list[Any], last: dict[int, int], oldest_ms: int | None,
                    watchers: Sequence[tuple[bytes, bytes]] = ()) -> bool:
        """One applied batch: rows cached, records (or, catching up, held), letters and watchers sent, offsets covered.

        ``last``: each partition's last offset in the batch; ``oldest_ms``:
        its oldest Kafka timestamp; ``watchers``: item-watchers records, sent
        now even while catching up (the refiner drops a replayed one; like a
        letter, each counts). Returns whether records were sent now.
        """
        for user, st in states.items():
            self.cache.put(user.encode("utf-8"), st, st.partition)
        if self.catch_up is not None:
            self.catch_up.hold(records, seqs, oldest_ms)
            records = {}
        self.cache.handed_over(await self.output.send(records, letters, watchers), last)
        return bool(records)

    # --- making it durable ----------------------------------------------------------
    async def maybe_flush(self) -> None:
        """End a finished catch-up; surface a failed flush; start one when due; wait for it under backpressure.

        Due: every commit interval. Backpressure: the row cache is full, or a
        partition is ``uncommitted_limit`` messages ahead of its commit.
        """
        if self.catch_up is not None and self.catch_up.done(self.feed.next_offsets, self.feed.highwater):
            await self._send_held()
        running = self.flushing
        if running is not None and running.done():
            self.flushing = None
            running.result()  # a failed flush raises here, and the worker redoes from the last commit
        if self.catch_up is not None:
            return  # nothing is committed while records are held
        due = time.monotonic() - self.last_flush >= self.settings.commit_interval_s
        behind = self.cache.full() or self.too_far_ahead()
        if self.flushing is None and self.cache.pending() and (due or behind):
            self.flushing = asyncio.ensure_future(self._start_flush(paced=not behind))
        if self.flushing is not None and behind:
            await self._settle_flush()

    def too_far_ahead(self) -> bool:
        """Has any partition run further beyond its last commit than a catch-up would replay?"""
        limit = uncommitted_limit(self.settings.batch_size) - self.settings.batch_size  # the next batch may add one
        committed = self.feed.committed
        return any(offset - committed.get(p, offset) >= limit for p, offset in self.feed.next_offsets.items())

    async def settle(self) -> None:
        """Make every row, record and dead letter so far durable and commit the offsets behind them.

        A catch-up in progress ends here: its held records are sent first,
        since the offsets behind them are about to be committed.
        """
        await self._settle_flush()
        if self.catch_up is not None:
            await self._send_held()
        if self.cache.pending():
            await self._start_flush()

    def abort(self) -> None:
        """Forget all output since the last commit (the feed is rewound or released).

        Rows a cancelled flush already put in the table are durable (they
        went in after the broker acknowledged them), so a replay skips their
        events; every other row since the last commit is simply computed again.
        """
        if self.flushing is not None:
            self.flushing.cancel()
            self.flushing.add_done_callback(_retrieve)
        self.flushing = None
        self.cache.clear()

    # --- inside ------------------------------------------------------------------
    async def _send_held(self) -> None:
        """End the catch-up: its held records go to the producer, with the rows and offsets the next flush covers."""
        catch_up, self.catch_up = self.catch_up, None
        held = catch_up.records() if catch_up else {}
        self.cache.handed_over(await self.output.send(held, []), {})
        age_s = self.observe_age(catch_up.oldest_ms) if held and catch_up else None
        log.info("caught up records_sent=%d oldest_event_age_s=%s", len(held), "-" if age_s is None else f"{age_s:.2f}")

    async def _settle_flush(self) -> None:
        """Wait for the flush in flight, if any (raising its error)."""
        running, self.flushing = self.flushing, None
        if running is not None:
            self.pacer.hurry()
            await running

    def _start_flush(self, paced: bool = False) -> Coroutine[Any, Any, None]:
        """A flush of everything staged and handed over so far (awaited by the caller); the interval restarts now.

        ``paced``: a timer's flush, spread over part of the interval (``streams.checkpoint.flush_pacing``).
        """
        self.last_flush = time.monotonic()
        self.pacer.begin(paced)
        return self._flush(self.cache.begin_flush())

    async def _flush(self, f: Flush) -> None:
        """Rows to the changelog and table; once they and the deliveries are acknowledged, commit the offsets."""
        t0 = time.perf_counter()
        await self.rows.write(f.rows, self.pacer.pause)
        self.cache.end_flush()
        if f.deliveries:
            await asyncio.gather(*f.deliveries)
        committed = await self.feed.commit(f.offsets)
        self.observe_flush(time.perf_counter() - t0, committed)


def _retrieve(task: asyncio.Future) -> None:
    """Read a dropped task's outcome, so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()
