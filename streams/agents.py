"""The worker's topics, tables and update loop: thin code that moves bytes between Kafka and pure functions.

* The user update loop reads the watch-events partitions the Faust group
  assigned to this worker in record batches (``streams.feed``: Faust is
  subscribed for the assignment, but does not fetch them), decodes and
  validates them (``streams.validate``), reads each touched user's row once,
  applies the batch (``streams.apply``), writes each touched row once and
  sends one ``user-embeddings`` record per touched user. Rejections go to
  ``watch-events-dlq`` with their reason.
* ``item-tower`` on ``item-features``: embeds new videos with the bundle's
  item tower and publishes them on ``item-vectors``, which the item table
  follows (``streams.items.ItemTable``).

Exactly once in effect: (1) a batch's records and dead letters go to the
producer as soon as it is applied, and its touched rows wait in the row
cache (``streams.row_cache``), where the next batches read them; (2) every
``DREAMSTREAM_COMMIT_INTERVAL_S`` a flush writes the cached rows, the newest
per user, to the user table's changelog and puts them in the table once the
broker has them, in the background while batches go on; (3) once those rows
and the deliveries before them are acknowledged, the flush commits the
offsets behind them. A crash anywhere replays at most the events since the
last commit: a user whose row reached the broker says they are applied (the
stored position), so they are skipped and the stored record is sent again,
byte for byte; a user whose row did not is applied again from the previous
row, to the same row and record. A flush whose output fails (broker away)
is redone from the last commit the same way, so the worker waits out a
broker restart instead of dying.

The user table is written with the *source* partition of the event, as
Faust's own ``table[key] = value`` does inside a stream, so a user's row
lives in the changelog partition of the watch-events partition that owns
the user, whatever partitioner the producers used.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Coroutine

import faust
from aiokafka.errors import KafkaError
from faust.types import TP

from dreamstream import codec
from dreamstream.settings import Settings
from dreamstream.topics import DLQ, ITEM_FEATURES, ITEM_VECTORS, USER_EMBEDDINGS, WATCH_EVENTS
from streams import items as item_mod
from streams import state as state_mod
from streams.apply import apply_batch
from streams.batch_send import send_records
from streams.catch_up import CatchUp, uncommitted_limit
from streams.changelog_producer import open_changelog_producer
from streams.feed import PartitionFeed, last_offsets, oldest_timestamp
from streams.flush_pacing import FlushPacer, byte_chunks
from streams.gc_tuning import tune_collector
from streams.hold_back import hold_back
from streams.metrics import WorkerMetrics, reason_label
from streams.reload import BundleHolder
from streams.row_cache import Flush, RowCache
from streams.validate import Event, decode_message

log = logging.getLogger("streams.worker")
RAW = dict(key_serializer="raw", value_serializer="raw")
TRANSIENT = (KafkaError, OSError, asyncio.TimeoutError)  # the broker away or a rebalance: wait and redo


class Worker:
    """Everything the loop and the agents share: settings, bundle holder, tables, feed, metrics."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.metrics = WorkerMetrics()
        self.holder = BundleHolder(settings.model_dir, on_switch=lambda b: self.metrics.serve_model(b.version))
        self.holder.load_latest()
        self.watch_topic = settings.topic(WATCH_EVENTS)
        self.out_topic = settings.topic(USER_EMBEDDINGS)
        self.dlq_topic = settings.topic(DLQ)
        self.items_topic = settings.topic(ITEM_VECTORS)
        self.started = time.monotonic()
        self.first_output: float | None = None
        self.users = app.Table("user-state", key_type=bytes, value_type=bytes, partitions=settings.partitions,
                               help="Per-user DreamUMM/OPAL state and last applied position.")
        self.items = item_mod.ItemTable(settings, self.items_topic)
        self.feed = PartitionFeed(settings, self.watch_topic, f"{app.conf.id}-positions")
        self.lock = asyncio.Lock()  # one batch, assignment or revocation at a time
        self.generation: int | None = None  # the Faust group generation the feed's assignment belongs to
        self.epoch = 0  # bumped by every revocation: an assignment computed before one is stale
        self.cache = RowCache()  # rows, deliveries and offsets not yet durable
        self.flushing: asyncio.Future | None = None  # the flush in flight (see flush)
        self.pacer = FlushPacer(settings.flush_spread * settings.commit_interval_s)  # spreads a timed flush's rows
        self.row_producer: Any = None  # streams.changelog_producer, started by run
        self.last_flush = time.monotonic()
        self.catch_up: CatchUp | None = None  # replaying since the last commit, records held (streams.catch_up)
        self.reported = 0.0  # when the last progress line was logged
        self.fetch_wait_s = 0.0  # how long the loop waited for the batch in hand (metrics)

    # --- the loop ------------------------------------------------------------
    async def run(self) -> None:
        """Assignment, batches and commits until the app stops; broker trouble is waited out."""
        await self.items.ready.wait()  # no event is applied before the item table caught up
        await self.feed.start()
        self.row_producer = await open_changelog_producer(self.settings)
        try:
            while not self.app.should_stop:
                try:
                    await self.step()
                except TRANSIENT as err:
                    await self.redo_from_commit(err)
                except asyncio.CancelledError as err:
                    if _cancel_requested():
                        raise  # a real cancellation: the app is stopping
                    await self.redo_from_commit(err)  # a library's stray one (see streams.fetch_cancel) is not a stop
        finally:
            await self.shut_down()

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
                await self.close_row_producer()

    async def redo_from_commit(self, err: BaseException) -> None:
        """Broker trouble in a batch or its output: forget what is not committed and read again from the commit."""
        log.warning("batch output failed (%r); redoing from the last commit in 1s", err)
        await asyncio.sleep(1.0)
        async with self.lock:
            self.drop_unfinished()
            self.feed.rewind(dict(self.feed.committed))
            self.begin_catch_up(dict(self.feed.committed))

    async def close_row_producer(self) -> None:
        """Stop the changelog producer (once): at shutdown before Faust tears the loop down, else when the loop ends."""
        producer, self.row_producer = self.row_producer, None
        if producer is not None:
            await producer.stop()

    async def step(self) -> None:
        """One turn: follow the assignment, process one batch, commit when due."""
        if not self.serving():
            await asyncio.sleep(0.05)
            return
        if self.generation != self.app.consumer_generation_id:
            await self.take_assignment()
            return
        waited = time.perf_counter()
        records = await self.feed.next_batch(self.settings.batch_size, self.settings.batch_timeout_s)
        self.fetch_wait_s = time.perf_counter() - waited
        async with self.lock:
            records = [r for r in records if r.partition in self.feed.owned]  # a revocation came in between
            if records:
                await self.process(records)
            else:
                await self.end_catch_up_when_done()
            await self.flush_when_due()
        self._report_progress()

    async def flush_when_due(self) -> None:
        """Start a flush every commit interval, or early when the cache is full; surface a failed one.

        Backpressure: when the broker is so slow that the cache fills up, or
        a partition runs ``uncommitted_limit`` messages ahead of its commit
        (the bound a catch-up relies on), the loop waits for the flush.
        """
        running = self.flushing
        if running is not None and running.done():
            self.flushing = None
            running.result()  # a failed flush raises here, and the loop redoes from the last commit
        if self.catch_up is not None:
            return  # nothing is committed while records are held
        due = time.monotonic() - self.last_flush >= self.settings.commit_interval_s
        behind = self.cache.full() or self.too_far_ahead()
        if self.flushing is None and self.cache.pending() and (due or behind):
            self.flushing = asyncio.ensure_future(self.next_flush(paced=not behind))
        if self.flushing is not None and behind:
            await self.settle_flush()

    def too_far_ahead(self) -> bool:
        """Has any partition run further beyond its last commit than a catch-up would replay?"""
        limit = uncommitted_limit(self.settings.batch_size) - self.settings.batch_size  # the next batch may add one
        feed = self.feed
        return any(offset - feed.committed.get(p, offset) >= limit for p, offset in feed.next_offsets.items())

    def serving(self) -> bool:
        """Faust finished the rebalance and the table's recovery: the rows are there to build on."""
        app = self.app
        return bool(app.tables.actives_ready and not app.rebalancing and self.items.ready.is_set())

    async def take_assignment(self) -> None:
        """Complete the rows of the assigned partitions, then read them from their committed offsets."""
        generation, epoch = self.app.consumer_generation_id, self.epoch
        assigned = {tp.partition for tp in self.app.consumer.assignment() if tp.topic == self.watch_topic}
        if assigned:
            await self.complete_rows(assigned)
        async with self.lock:
            if epoch != self.epoch or generation != self.app.consumer_generation_id or not self.serving():
                return  # rebalanced meanwhile: start over with the new assignment
            self.drop_unfinished()  # normally nothing: the revocation before this finished or dropped it
            self.begin_catch_up(await self.feed.assign(assigned))
            self.generation = generation

    def begin_catch_up(self, resumed: dict[int, int]) -> None:
        """Replay from these committed offsets with records held (``streams.catch_up``); none: start normally."""
        self.catch_up = CatchUp.after(resumed, self.settings.batch_size) if resumed else None
        if self.catch_up is not None:
            log.info("catching up partitions=%s up_to=%s", sorted(resumed), self.catch_up.targets)

    async def settle_flush(self) -> None:
        """Wait for the flush in flight, if any (raising its error)."""
        running, self.flushing = self.flushing, None
        if running is not None:
            self.pacer.hurry()
            await running

    async def settle(self) -> None:
        """Make every row, record and dead letter so far durable and commit the offsets behind them.

        A catch-up in progress ends here: its held records are sent first,
        since the offsets behind them are about to be committed.
        """
        await self.settle_flush()
        if self.catch_up is not None:
            await self.send_held()
        if self.cache.pending():
            await self.next_flush()

    async def release(self, why: str) -> None:
        """Revocation or shutdown: finish the batch in hand, commit what is done, stop reading."""
        self.epoch += 1
        async with self.lock:
            if self.cache.staged:  # the loop was cancelled inside a batch; its rows are never flushed (streams.row_cache)
                log.warning("%s: a batch was interrupted before its records were handed over; the next owner replays "
                            "it", why)
            try:
                await asyncio.wait_for(self.settle(), timeout=self.settings.rebalance_timeout_s / 2)
            except (*TRANSIENT, asyncio.CancelledError) as err:
                log.warning("%s: could not commit the last output (%r); the next owner replays it", why, err)
            except Exception:  # a bug: still let go, or Faust's rebalance or stop breaks off half done
                log.exception("%s: the last flush failed; the next owner replays from the last commit", why)
            if self.generation is not None and self.feed.committed:  # the next owner's "feed assigned" starts here
                log.info("%s: released partitions committed=%s", why, dict(sorted(self.feed.committed.items())))
            self.drop_unfinished()
            self.feed.release()
            self.generation = None
            if why == "shutdown":  # its last flush is done: close it now, not in a task Faust cancels mid-teardown
                await self.close_row_producer()

    def _report_progress(self, every_s: float = 10.0) -> None:
        """One INFO line every ``every_s``: what a person tailing the log wants to know is moving."""
        now = time.monotonic()
        if now - self.reported < every_s:
            return
        self.reported = now
        events = self.metrics.registry.get_sample_value("dreamstream_events_total") or 0
        log.info("progress events_applied=%d committed=%s highwater=%s", events, self.feed.committed,
                 {p: self.feed.highwater(p) for p in sorted(self.feed.owned)})

    # --- one batch -----------------------------------------------------------
    async def process(self, batch: list[Any]) -> None:
        """One batch: decode, apply, send its records and dead letters, keep its rows in the cache."""
        marks = [time.perf_counter()]
        bundle = self.holder.bundle  # fixed for the whole batch: reloads land between batches
        now_ms = int(time.time() * 1000)
        events: list[Event] = []
        dead: list[tuple[str, Any, bytes | None]] = []
        for m in batch:
            evs, rejections = decode_message(m.key, m.value, now_ms, m.partition, m.offset)
            events.extend(evs)
            for rej in rejections:
                dead.append((rej.reason, m, rej.value))
        states = {user: st for user in {ev.user for ev in events} if (st := self.row(user)) is not None}
        marks.append(time.perf_counter())
        result = apply_batch(states, events, self.items, bundle, self.settings)
        marks.append(time.perf_counter())
        messages = {(m.partition, m.offset): m for m in batch} if result.unknown else {}
        for ev in result.unknown:
            m = messages[(ev.partition, ev.offset)]
            dead.append((f"video {ev.video[:64]!r} is not in the item table (publish its vector first)", m,
                         _element(m.value, ev.index)))
        # rows reach the table only through a flush, after the broker has them: a failed flush leaves the
        # table as it was, so everything since the last commit is redone exactly
        for user, st in result.states.items():
            self.cache.put(user.encode("utf-8"), st, st.partition)
        records = result.records
        if self.catch_up is not None:
            self.catch_up.hold(records, lambda record: codec.unpack(record)["seq"], oldest_timestamp(batch))
            records = {}
        last = last_offsets(batch)
        self.cache.handed_over(await self.send_output(records, dead), last)
        if records:
            self._observe_age(oldest_timestamp(batch))
        await self.end_catch_up_when_done()
        if result.records and self.first_output is None:
            self.first_output = time.monotonic()
            log.info("first output seconds_since_start=%.2f", self.first_output - self.started)
            if self.settings.gc_tuning:
                tune_collector()
        marks.append(time.perf_counter())
        self._observe(batch, result, tuple(marks), last)

    async def end_catch_up_when_done(self) -> None:
        """The stretch the previous run may have published is applied: send the held records, resume commits."""
        if self.catch_up is not None and self.catch_up.done(self.feed.next_offsets, self.feed.highwater):
            await self.send_held()

    async def send_held(self) -> None:
        """End the catch-up: its held records go to the producer, with the rows and offsets the next flush covers."""
        catch_up, self.catch_up = self.catch_up, None
        held = catch_up.records() if catch_up else {}
        self.cache.handed_over(await self.send_output(held, []), {})
        age_s = self._observe_age(catch_up.oldest_ms) if held and catch_up else None
        log.info("caught up records_sent=%d oldest_event_age_s=%s", len(held), "-" if age_s is None else f"{age_s:.2f}")

    async def send_output(self, records: dict[str, bytes], dead: list[tuple[str, Any, bytes | None]]) -> list[Any]:
        """Records and dead letters to the producer now, before their rows are durable; their delivery futures.

        Waiting for the rows first cost the broker's acknowledgement of
        them in every event's latency. Sending now is as exact: if the rows
        never become durable, the offsets are not committed either, the
        events are applied again and the same records (same ``seq``, same
        bytes with the same bundle) are sent again, which consumers drop by
        ``seq``.
        """
        producer = self.app.producer._ensure_producer()
        out = [(user.encode("utf-8"), record, None) for user, record in records.items()]
        deliveries = [sent.future for sent in await send_records(producer, self.out_topic, out)] if out else []
        if dead:
            letters = [(m.key, codec.pack(codec.dead_letter(reason, m.topic, m.partition, m.offset, m.key, value)), None)
                       for reason, m, value in dead]
            deliveries.extend(sent.future for sent in await send_records(producer, self.dlq_topic, letters))
            for reason, m, _ in dead:
                self.metrics.dead_letters.labels(reason=reason_label(reason)).inc()
                log.warning("dead letter topic=%s partition=%s offset=%s reason=%r", m.topic, m.partition, m.offset, reason)
        return deliveries

    def row(self, user: str) -> state_mod.UserState | None:
        """A user's newest state: the row cache's, else the table's."""
        key = user.encode("utf-8")
        st = self.cache.get(key)
        if st is not None:
            return st
        raw = self.users.get(key)
        return state_mod.decode(raw) if raw is not None else None

    def next_flush(self, paced: bool = False) -> Coroutine[Any, Any, None]:
        """A flush of everything computed so far (awaited by the caller); the commit interval restarts now.

        ``paced``: a timer's flush, spread over part of the interval (``streams.flush_pacing``).
        """
        self.last_flush = time.monotonic()
        self.pacer.begin(paced)
        return self.flush(self.cache.begin_flush())

    async def flush(self, f: Flush) -> None:
        """Rows to the changelog, then into the table; once they and the deliveries are acknowledged, commit."""
        t0 = time.perf_counter()
        chunks, encode_s = await self.write_rows(f)
        self.cache.end_flush()
        t2 = time.perf_counter()
        if f.deliveries:
            await asyncio.gather(*f.deliveries)
        await self.feed.commit(f.offsets)
        self.metrics.flush_seconds.observe(time.perf_counter() - t0)
        self.metrics.users.set(len(self.users.data))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("flush rows=%d bytes=%d chunks=%d encode_ms=%.1f write_ms=%.1f commit_ms=%.1f", len(f.rows),
                      sum(state_mod.row_size(st) for st, _ in f.rows.values()), chunks, encode_s * 1e3,
                      (t2 - t0 - encode_s) * 1e3, (time.perf_counter() - t2) * 1e3)

    async def write_rows(self, f: Flush) -> tuple[int, float]:
        """The flush's rows to the changelog in ~1 MB requests, paced, each into the table once acknowledged.

        Encoded a request at a time: encoding all ~5,000 rows up front
        stalled the batch loop 14-31 ms. Returns the number of requests and
        the seconds spent encoding.
        """
        states = [(key, st, partition) for key, (st, partition) in f.rows.items()]
        chunks = byte_chunks(states, size=lambda row: state_mod.row_size(row[1]))
        topic, encode_s = self.users.changelog_topic.get_topic_name(), 0.0
        for i, chunk in enumerate(chunks):
            if i:
                await self.pacer.pause(len(chunks))
            t1 = time.perf_counter()
            rows = [(key, state_mod.encode(st), partition) for key, st, partition in chunk]
            encode_s += time.perf_counter() - t1
            for sent in await send_records(self.row_producer, topic, rows):
                self.users.data.set_persisted_offset(TP(sent.topic, sent.partition), await sent.last_offset())
            for key, value, partition in rows:
                _put_row(self.users, key, value, partition)
        return len(chunks), encode_s

    def drop_unfinished(self) -> None:
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

    async def complete_rows(self, partitions: set[int]) -> None:
        """Make sure the table holds the newest durable row of every user of these partitions.

        Faust recovers the table up to ``end_offsets``, which on tansu is one
        produce batch short (its ListOffsets answers the last batch's base
        offset): the rows of the last batch before a crash were missing and
        their events applied twice. So after every rebalance the worker reads
        each assigned changelog partition itself, from where Faust's recovery
        got to up to the high watermark its fetches report, keeping per user
        the row that is furthest along (rows are positions: the newest wins,
        so reading a row twice is harmless).
        """
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from streams.log_reader import caught_up, read_from_start

        t0 = time.monotonic()
        topic = self.users.changelog_topic.get_topic_name()
        log.info("completing user rows partitions=%s", sorted(partitions))
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers, group_id=None,
                                    enable_auto_commit=False, fetch_max_wait_ms=50)
        await consumer.start()
        n = 0
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        start = {tp: self._recovered_through(TP(topic, tp.partition)) for tp in tps}

        def keep_furthest(m: Any) -> None:
            nonlocal n
            n += 1
            if m.value is None:
                return
            have = self.users.data.get(m.key)
            if have is None or _further(m.value, have):
                _put_row(self.users, m.key, m.value, m.partition)

        async def at_end() -> bool:
            if await caught_up(consumer, tps):
                return True
            if time.monotonic() - t0 > 5:
                log.info("completing user rows: positions=%s highwaters=%s",
                         {tp.partition: await consumer.position(tp) for tp in tps},
                         {tp.partition: consumer.highwater(tp) for tp in tps})
            return False

        try:
            await read_from_start(consumer, tps, keep_furthest, at_end, start)
        finally:
            await consumer.stop()
        self._drop_buffered_rows(partitions)
        log.info("user rows complete partitions=%s from=%s rows_read=%d seconds=%.2f", sorted(partitions),
                 {tp.partition: o for tp, o in start.items()}, n, time.monotonic() - t0)

    def _recovered_through(self, tp: TP) -> int:
        """The changelog offset up to which Faust's recovery surely applied this partition to the table.

        Not ``active_offsets``: that is the last offset Faust *received*, and
        rows received after it declared the recovery done (tansu reports the
        end one produce batch short) wait in its buffer unapplied. A whole
        flush of rows was missed that way and its users' events applied to
        older rows. The highwater Faust recovered to is applied for sure.
        """
        recovery = self.app.tables.recovery
        through = recovery.active_highwaters.get(tp)
        if through is None:
            through = recovery.active_offsets.get(tp)
        return max(0, int(through or 0))

    def _drop_buffered_rows(self, partitions: set[int]) -> None:
        """Drop rows of these partitions Faust received but has not applied: the table has them, or newer ones.

        Faust applies its recovery buffer when it fills or at the next
        rebalance, which would put those older rows over newer ones.
        """
        buffer = self.app.tables.recovery.buffers.get(self.users)
        if buffer:
            buffer[:] = [event for event in buffer if event.message.partition not in partitions]

    def _observe(self, batch: list[Any], result: Any, marks: tuple[float, ...], last: dict[int, int]) -> None:
        """Metrics and a debug line for one batch; ``marks``: start, decoded, applied, sent; ``last``: each
        partition's last offset in it."""
        t0, t1, t2, t3 = marks
        m = self.metrics
        m.events.inc(result.applied)
        m.replays.inc(result.replays)
        m.records.inc(len(result.records))
        m.batch_size.observe(len(batch))
        m.step_seconds.observe(t2 - t1)
        m.batch_seconds.observe(t3 - t0)
        m.fetch_wait_seconds.observe(self.fetch_wait_s)
        m.cached_rows.set(len(self.cache.dirty))
        for partition, offset in last.items():
            high = self.feed.highwater(partition)
            if high is not None:
                m.lag.labels(partition=str(partition)).set(max(0, high - offset - 1))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("batch messages=%d applied=%d replays=%d records=%d waves=%d fetch_wait_ms=%.1f decode_ms=%.1f "
                      "apply_ms=%.1f send_ms=%.1f", len(batch), result.applied, result.replays, len(result.records),
                      result.waves, self.fetch_wait_s * 1e3, *((b - a) * 1e3 for a, b in zip(marks, marks[1:])))

    def _observe_age(self, oldest_ms: int | None) -> float | None:
        """How old the oldest event behind records just sent was: the staleness ranking services see."""
        if oldest_ms is None:
            return None
        age_s = max(0.0, time.time() - oldest_ms / 1000)
        self.metrics.event_age_seconds.observe(age_s)
        return age_s

    # --- the item tower ------------------------------------------------------
    async def embed_items(self, batch: list[Any]) -> None:
        """New videos' features -> item vectors on item-vectors (the item table follows)."""
        bundle = self.holder.bundle
        text_dim, visual_dim = item_mod.tower_dims(bundle)
        good, dead = [], []
        for event in batch:
            m = event.message
            try:
                good.append(item_mod.parse_features(m.value, text_dim, visual_dim))
            except ValueError as err:
                dead.append((f"item-features: {err}", m))
        send = self.app.producer.send
        futures = []
        if good:
            vectors = item_mod.embed(bundle, [g[1] for g in good], [g[2] for g in good])
            for (video, _, _, ts), vec in zip(good, vectors):
                value = codec.pack(codec.item_vector_record(video, vec, bundle.version, ts))
                futures.append(await send(self.items_topic, codec.key_bytes(video), value, None, None, None))
            self.metrics.items.inc(len(good))
        for reason, m in dead:
            letter = codec.dead_letter(reason, m.topic, m.partition, m.offset, m.key, m.value)
            futures.append(await send(self.dlq_topic, m.key, codec.pack(letter), None, None, None))
            self.metrics.dead_letters.labels(reason="item-features").inc()
            log.warning("dead letter topic=%s partition=%s offset=%s reason=%r", m.topic, m.partition, m.offset, reason)
        if futures:
            await asyncio.gather(*futures)


def _cancel_requested() -> bool:
    """Was this task asked to stop? (Python < 3.11 cannot tell: then every CancelledError counts as asked.)"""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return task is None or cancelling is None or cancelling() > 0


def _retrieve(task: asyncio.Future) -> None:
    """Read a dropped task's outcome, so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


def _put_row(table: Any, key: bytes, value: bytes, partition: int) -> None:
    """``table.data[key] = value`` in a known partition.

    Faust's RocksDB store takes the partition from the current stream event,
    which batches from ``take_events`` do not set: ``data[key] = value``
    asserted there (every batch crashed with ``rocksdb://``). The memory store
    keeps no partitions.
    """
    store = table.data
    if hasattr(store, "_db_for_partition"):
        store._key_index[key] = partition
        store._db_for_partition(partition).put(key, value)
    else:
        store[key] = value


def _further(new: bytes, old: bytes) -> bool:
    """Is row ``new`` further along its user's stream than row ``old``?"""
    a, b = state_mod.decode(new), state_mod.decode(old)
    if a.partition != b.partition:
        return True  # the changelog is read in order: a later row for another partition is the current one
    return (a.offset, a.index) > (b.offset, b.index)


def _element(value: bytes, index: int) -> bytes:
    """The bytes of one event of a message: the message itself, or one re-packed array element."""
    obj = codec.unpack(value)
    return codec.pack(obj[index]) if isinstance(obj, list) else value


def register(app: faust.App, settings: Settings) -> Worker:
    """Declare the worker's topics, tables, agents, timer and /metrics page on ``app``."""
    worker = Worker(app, settings)
    worker.metrics.serve_model(worker.holder.bundle.version)
    watch = app.topic(worker.watch_topic, partitions=settings.partitions, **RAW)
    features = app.topic(settings.topic(ITEM_FEATURES), partitions=settings.item_partitions, **RAW)

    @app.task
    async def follow_items() -> None:
        await worker.items.follow()

    hold_back(worker.watch_topic)  # assigned through the Faust group, read by worker.feed

    @app.agent(watch, name="update-users")
    async def assignment_only(stream: faust.StreamT) -> None:
        """Subscribes the Faust group to watch-events, so it assigns them with the user table; never fed."""
        async for event in stream:
            log.error("faust delivered watch-events offset %s, which it should not fetch; ignored (the feed "
                      "reads it)", event.message.offset)

    @app.task
    async def update_users() -> None:
        await worker.run()

    @app.agent(features, name="item-tower")
    async def item_tower(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(256, settings.batch_timeout_s):
            await worker.embed_items(batch)

    @app.timer(2.0, name="bundle-watcher")
    async def watch_bundles() -> None:
        await worker.holder.poll()

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(worker.metrics.exposition(), content_type="text/plain")

    @app.on_partitions_revoked.connect
    async def release_partitions(app: Any, revoked: Any, **kwargs: Any) -> None:
        await worker.release("rebalance")  # the next owner starts where this worker's output ends

    @app.on_before_shutdown.connect
    async def release_on_shutdown(app: Any, **kwargs: Any) -> None:
        await worker.release("shutdown")

    app.dreamstream_worker = worker  # for tests and the bench
    return worker
