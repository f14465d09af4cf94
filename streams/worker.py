"""The user update loop: batches move from the feed, through the pure functions, into the checkpoint.

One turn (:meth:`Worker.step`): follow the Faust group's assignment, take a batch of watch-
events records from the feed (``streams.kafka.feed``), decode and validate it
(``streams.domain.validate``), read each touched user's row once (the checkpoint's cache, else
the table), apply the batch (``streams.domain.apply``), and stage the result in the checkpoint
(``streams.checkpoint``), which sends its records and dead letters now and makes rows and
offsets durable in the background, in the one order that keeps the output exactly once in
effect. Broker trouble anywhere is waited out: the checkpoint forgets what is not committed and
the feed reads again from the commit.

Rebalances and shutdown go through :meth:`Worker.release`, which settles
the checkpoint (commits what is done) before Faust hands the partitions on.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust

from dreamstream import codec
from dreamstream.settings import Settings
from dreamstream.topics import DLQ, ITEM_VECTORS, ITEM_WATCHERS, USER_EMBEDDINGS, WATCH_EVENTS
from streams.checkpoint.checkpoint import Checkpoint
from streams.compat.faust_tables import producer as faust_producer
from streams.compat.fetch_cancel import cancel_requested
from streams.compat.tansu_rows import complete_rows
from streams.domain import refinement
from streams.domain.apply import BatchResult, apply_batch
from streams.domain.state import UserState
from streams.domain.validate import Event, decode_message
from streams.item_refiner import ItemRefiner
from streams.item_tower import ItemTower
from streams.kafka.changelog_rows import ChangelogRows
from streams.kafka.batch_sizing import BatchSizing, total_lag
from streams.kafka.feed import PartitionFeed, last_offsets, oldest_timestamp
from streams.kafka.item_table import ItemTable
from streams.kafka.output import DeadLetter, Output
from streams.kafka.transient import TRANSIENT
from streams.ops.gc_tuning import tune_collector
from streams.ops.metrics import WorkerMetrics
from streams.ops.reload import BundleHolder
from streams.ops.state_store import state_table_options

log = logging.getLogger("streams.worker")


class Worker:
    """The loop and what it moves batches between: feed, tables, bundle, checkpoint, metrics."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app, self.settings = app, settings
        self.metrics = WorkerMetrics()
        self.holder = BundleHolder(settings.model_dir, on_switch=lambda b: self.metrics.serve_model(b.version),
                                   namespace=settings.namespace)
        self.holder.load_latest()
        self.watch_topic = settings.topic(WATCH_EVENTS)
        self.users = app.Table("user-state", key_type=bytes, value_type=bytes, partitions=settings.partitions,
                               help="Per-user state and last position.", options=state_table_options(settings))
        self.rows = ChangelogRows(self.users, settings, self.metrics.stage_seconds.labels(stage="flush_encode").observe)
        self.items = ItemTable(settings, settings.topic(ITEM_VECTORS), dim=lambda: self.holder.bundle.manifest.dim,
                               on_refused=lambda label: self.metrics.items_refused.labels(reason=label).inc(),
                               on_read=self._observe_items_read)
        self.metrics.watch_item_lookups(self.items.store.lookups)
        self.feed = PartitionFeed(settings, self.watch_topic, f"{app.conf.id}-positions")
        self.sizing = BatchSizing(settings.batch_min, settings.batch_size)
        output = Output(lambda: faust_producer(app), settings.topic(USER_EMBEDDINGS), settings.topic(DLQ), self.metrics,
                        settings.topic(ITEM_WATCHERS))
        self.checkpoint = Checkpoint(self.feed, output, self.rows, settings,
                                     observe_flush=self._observe_flush, observe_age=self.metrics.observe_age)
        self.item_tower = ItemTower(self.holder, lambda: faust_producer(app), settings.topic(ITEM_VECTORS), output,
                                    self.metrics, settings)
        self.item_refiner = ItemRefiner(app, self.holder, output, self.metrics, settings)
        self.lock = asyncio.Lock()  # one batch, assignment or revocation at a time
        self.generation: int | None = None  # the Faust group generation the feed's assignment belongs to
        self.epoch = 0  # bumped by every revocation: an assignment computed before one is stale
        self.started = time.monotonic()
        self.first_output: float | None = None
        self.reported = 0.0  # when the last progress line was logged
        self.fetch_wait_s = 0.0  # how long the loop waited for the batch in hand (metrics)

    # --- the loop ------------------------------------------------------------
    async def run(self) -> None:
        """Assignment, batches and commits until the app stops; broker trouble is waited out."""
        await self.items.ready.wait()  # no event is applied before the item table caught up
        await self.feed.start()
        await self.rows.start()
        try:
            while not self.app.should_stop:
                try:
                    await self.step()
                except TRANSIENT as err:
                    await self.redo_from_commit(err)
                except asyncio.CancelledError as err:
                    if cancel_requested():
                        raise  # a real cancellation: the app is stopping
                    await self.redo_from_commit(err)  # a library's stray one (streams.compat.fetch_cancel) is not a stop
        finally:
            await self.shut_down()

    async def step(self) -> None:
        """One turn: follow the assignment, process one batch, flush when due."""
        if not self.serving():
            await asyncio.sleep(0.05)
            return
        if self.generation != self.app.consumer_generation_id:
            await self.take_assignment()
            return
        self.rows.chunk_bytes = self.sizing.flush_chunk_bytes(lag := total_lag(self.feed))  # for a flush starting now
        waited = time.perf_counter()
        records = await self.feed.next_batch(self.sizing.records(lag), self.settings.batch_timeout_s)
        self.fetch_wait_s = time.perf_counter() - waited
        async with self.lock:
            records = [r for r in records if r.partition in self.feed.owned]  # a revocation came in between
            if records:
                await self.process(records)
            with self.metrics.stage_seconds.labels(stage="flush_wait").time():
                await self.checkpoint.maybe_flush()
        self._report_progress()

    def serving(self) -> bool:
        """Faust finished the rebalance and the table's recovery: the rows are there to build on."""
        return bool(self.app.tables.actives_ready and not self.app.rebalancing and self.items.ready.is_set())

    async def take_assignment(self) -> None:
        """Complete the rows of the assigned partitions (tansu), then read them from their committed offsets."""
        generation, epoch = self.app.consumer_generation_id, self.epoch
        assigned = {tp.partition for tp in self.app.consumer.assignment() if tp.topic == self.watch_topic}
        await complete_rows(self.app, self.users, self.settings, assigned)
        async with self.lock:
            if epoch != self.epoch or generation != self.app.consumer_generation_id or not self.serving():
                return  # rebalanced meanwhile: start over with the new assignment
            self.checkpoint.abort()  # normally nothing: the revocation before this finished or dropped it
            self.checkpoint.begin(await self.feed.assign(assigned))
            self.generation = generation

    async def redo_from_commit(self, err: BaseException) -> None:
        """Broker trouble in a batch or its output: forget what is not committed and read again from the commit."""
        log.warning("batch output failed (%r); redoing from the last commit in 1s", err)
        await asyncio.sleep(1.0)
        async with self.lock:
            self.checkpoint.abort()
            self.feed.rewind(dict(self.feed.committed))
            self.checkpoint.begin(dict(self.feed.committed))

    async def release(self, why: str) -> None:
        """Revocation or shutdown: finish the batch in hand, commit what is done, stop reading."""
        self.epoch += 1
        async with self.lock:
            if self.checkpoint.interrupted:
                log.warning("%s: a batch was interrupted before its records were handed over; the next owner replays "
                            "it", why)
            try:
                await asyncio.wait_for(self.checkpoint.settle(), timeout=self.settings.rebalance_timeout_s / 2)
            except (*TRANSIENT, asyncio.CancelledError) as err:
                log.warning("%s: could not commit the last output (%r); the next owner replays it", why, err)
            except Exception:  # a bug: still let go, or Faust's rebalance or stop breaks off half done
                log.exception("%s: the last flush failed; the next owner replays from the last commit", why)
            if self.generation is not None and self.feed.committed:  # the next owner's "feed assigned" starts here
                log.info("%s: released partitions committed=%s", why, dict(sorted(self.feed.committed.items())))
            self.checkpoint.abort()
            self.feed.release()
            self.generation = None
            if why == "shutdown":  # its last flush is done: close it now, not in a task Faust cancels mid-teardown
                await self.rows.stop()

    async def shut_down(self) -> None:
        """The loop's end: the last flush and commit while the feed and the changelog producer are open, then close them.

        The loop sees the app stopping before Faust's ``on_before_shutdown``
        runs ``release``; closing first left that release a flush with no
        producer, whose error aborted Faust's stop and left its consumer
        thread running (the process hung after "Closing event loop").
        """
        try:
            await self.release("shutdown")
        finally:  # closed even when the shutdown's cancellation interrupts the release or the feed's stop
            try:
                await self.feed.stop()
            finally:
                await self.rows.stop()

    # --- one batch -----------------------------------------------------------
    async def process(self, batch: list[Any]) -> None:
        """One batch: decode, apply, stage its rows, records and dead letters in the checkpoint."""
        marks = [time.perf_counter()]
        bundle = self.holder.bundle  # fixed for the whole batch: reloads land between batches
        events, letters = self.decode(batch)
        states = {user: st for user in {ev.user for ev in events} if (st := self.row(user)) is not None}
        marks.append(time.perf_counter())
        result = apply_batch(states, events, self.items.store, bundle, self.settings)
        marks.append(time.perf_counter())
        letters.extend(self.unknown_video(ev) for ev in result.unknown)
        oldest_ms = oldest_timestamp(batch)
        last = last_offsets(batch)
        watchers = refinement.watcher_rows(result.watchers, bundle.manifest.item_space)
        if await self.checkpoint.stage(result.states, result.records, result.seqs, letters, last, oldest_ms, watchers):
            self.metrics.observe_age(oldest_ms)
        self.metrics.watchers.inc(len(watchers))
        if result.records and self.first_output is None:
            self.first_output = time.monotonic()
            log.info("first output seconds_since_start=%.2f", self.first_output - self.started)
            if self.settings.gc_tuning:
                tune_collector()
        marks.append(time.perf_counter())
        self._observe(batch, result, tuple(marks), last)

    def decode(self, batch: list[Any]) -> tuple[list[Event], list[DeadLetter]]:
        """The batch's valid events, and a dead letter for every rejection with the bytes it refers to."""
        now_ms = int(time.time() * 1000)
        events: list[Event] = []
        letters: list[DeadLetter] = []
        for m in batch:
            evs, rejections = decode_message(m.key, m.value, now_ms, m.partition, m.offset)
            events.extend(evs)
            letters.extend(DeadLetter(r.reason, m.topic, m.partition, m.offset, m.key, r.value, r.label)
                           for r in rejections)
        return events, letters

    def unknown_video(self, ev: Event) -> DeadLetter:
        """The dead letter of an event whose video has no vector yet: the event's own bytes, keyed by its user."""
        return DeadLetter(f"video {ev.video[:64]!r} is not in the item table (publish its vector first)",
                          self.watch_topic, ev.partition, ev.offset, codec.key_bytes(ev.user), ev.raw, "unknown-video")

    def row(self, user: str) -> UserState | None:
        """A user's newest state: the checkpoint's, else the table's."""
        key = user.encode("utf-8")
        st = self.checkpoint.get(key)
        return st if st is not None else self.rows.get(key)

    # --- what a person watching it sees ---------------------------------------
    def _observe(self, batch: list[Any], result: BatchResult, marks: tuple[float, ...], last: dict[int, int]) -> None:
        lags = {p: high - offset - 1 for p, offset in last.items() if (high := self.feed.highwater(p)) is not None}
        self.metrics.observe_batch(len(batch), result, marks, self.fetch_wait_s, len(self.checkpoint.cache.dirty), lags)

    def _observe_items_read(self, records: int) -> None:
        """A fetch of item-vectors is stored: the records it read and the item store's RAM."""
        self.metrics.items_read.inc(records)
        self.metrics.item_store_bytes.set(self.items.store.resident_bytes())

    def _observe_flush(self, seconds: float, committed: bool) -> None:
        """A flush is done: its time, the rows the table now holds, and the commit (the watchdog's progress)."""
        self.metrics.flush_seconds.observe(seconds)
        self.metrics.users.set(len(self.rows))
        if committed:
            self.metrics.commits.inc()

    def _report_progress(self, every_s: float = 10.0) -> None:
        """One INFO line every ``every_s``: what a person tailing the log wants to know is moving."""
        now = time.monotonic()
        if now - self.reported < every_s:
            return
        self.reported = now
        events = self.metrics.registry.get_sample_value("dreamstream_events_total") or 0
        log.info("progress events_applied=%d committed=%s highwater=%s", events, self.feed.committed,
                 {p: self.feed.highwater(p) for p in sorted(self.feed.owned)})
