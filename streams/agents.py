"""The worker's topics, tables and agents: thin code that moves bytes between Kafka and pure functions.

* ``update-users`` on ``watch-events``: takes large batches of messages
  (``take_events``), decodes and validates them (``streams.validate``), reads
  each touched user's row once, applies the batch (``streams.apply``), writes
  each touched row once and sends one ``user-embeddings`` record per touched
  user. Rejections go to ``watch-events-dlq`` with their reason.
* ``item-tower`` on ``item-features``: embeds new videos with the bundle's
  item tower and publishes them on ``item-vectors``, which the item table
  follows (``streams.items.ItemTable``).

Exactly once in effect: ``take_events`` acks a batch only after this code
has handed every write to the producer, and Faust flushes the producer
before it commits offsets; a batch replayed after a crash meets rows whose
stored position says what is already applied (``streams.apply``).
The user-state table is written with the *source* partition of the event,
as Faust's own ``table[key] = value`` does inside a stream, so a user's row
lives in the changelog partition of the watch-events partition that owns
the user, whatever partitioner the producers used. Rows are written first
and awaited, records after: a record with seq n exists only once the row
with seq n is durable, so a replay can only re-send the same record (same
bytes, compacted topic), never an older seq.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
from faust.types import TP

from dreamstream import codec
from dreamstream.settings import Settings
from dreamstream.topics import DLQ, ITEM_FEATURES, ITEM_VECTORS, USER_EMBEDDINGS, WATCH_EVENTS
from streams import items as item_mod
from streams import state as state_mod
from streams.apply import apply_batch
from streams.batch_send import send_records
from streams.metrics import WorkerMetrics, reason_label
from streams.reload import BundleHolder
from streams.validate import Event, decode_message

log = logging.getLogger("streams.worker")
RAW = dict(key_serializer="raw", value_serializer="raw")


class Worker:
    """Everything the agents share: settings, bundle holder, tables, topic names, metrics."""

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
        self.pending: list[Any] = []
        self.synced: set[int] = set()  # watch-events partitions whose rows were completed since the last rebalance

    # --- the hot path ---------------------------------------------------------
    async def process(self, batch: list[Any]) -> None:
        """One batch of watch-events messages -> rows, records, dead letters."""
        t0 = time.perf_counter()
        bundle = self.holder.bundle  # fixed for the whole batch: reloads land between batches
        now_ms = int(time.time() * 1000)
        events: list[Event] = []
        dead: list[tuple[str, Any, bytes | None]] = []
        messages: dict[tuple[int, int], Any] = {}
        for event in batch:
            m = event.message
            evs, rejections = decode_message(m.key, m.value, now_ms, m.partition, m.offset)
            events.extend(evs)
            if evs:
                messages[(m.partition, m.offset)] = m
            for rej in rejections:
                dead.append((rej.reason, m, rej.value))
        new_partitions = {e.message.partition for e in batch} - self.synced
        if new_partitions:
            await self.complete_rows(new_partitions)
        states = {}
        for user in {ev.user for ev in events}:
            raw = self.users.get(user.encode("utf-8"))
            if raw is not None:
                states[user] = state_mod.decode(raw)
        t1 = time.perf_counter()
        result = apply_batch(states, events, self.items, bundle, self.settings)
        t2 = time.perf_counter()
        for ev in result.unknown:
            m = messages[(ev.partition, ev.offset)]
            dead.append((f"video {ev.video[:64]!r} is not in the item table (publish its vector first)", m,
                         _element(m.value, ev.index)))
        producer = self.app.producer._ensure_producer()  # the aiokafka producer Faust flushes before commits
        # 1. state rows, durable before any record that reflects them is sent: so after a crash
        #    a user's published seq never runs ahead of its stored state (records never go back)
        changelog = self.users.changelog_topic.get_topic_name()
        rows = []
        for user, st in result.states.items():
            key = user.encode("utf-8")
            value = state_mod.encode(st)
            _put_row(self.users, key, value, st.partition)
            rows.append((key, value, st.partition))
        for sent in await send_records(producer, changelog, rows):
            self.users.data.set_persisted_offset(TP(sent.topic, sent.partition), await sent.last_offset())
        # 2. one record per touched user, and the dead letters
        records = [(user.encode("utf-8"), record, None) for user, record in result.records.items()]
        futures = [sent.future for sent in await send_records(producer, self.out_topic, records)]
        send = self.app.producer.send
        for reason, m, value in dead:
            letter = codec.dead_letter(reason, m.topic, m.partition, m.offset, m.key, value)
            futures.append(await send(self.dlq_topic, m.key, codec.pack(letter), None, None, None))
            self.metrics.dead_letters.labels(reason=reason_label(reason)).inc()
            log.warning("dead letter topic=%s partition=%s offset=%s reason=%r", m.topic, m.partition, m.offset, reason)
        # Not awaited here: Faust flushes the producer before it commits offsets, so a batch's records
        # are on the broker before its offsets are committed; meanwhile the next batch is computed.
        for f in self.pending:
            if f.done() and f.exception() is not None:
                raise RuntimeError(f"a user-embeddings/dead-letter send failed: {f.exception()!r}; stopping "
                                   "before more offsets are committed") from f.exception()
        self.pending = [f for f in self.pending if not f.done()] + futures
        if result.records and self.first_output is None:
            self.first_output = time.monotonic()
            log.info("first output seconds_since_start=%.2f", self.first_output - self.started)
        self._observe(batch, result, t0, t1, t2)

    async def complete_rows(self, partitions: set[int]) -> None:
        """Make sure the table holds the newest durable row of every user of these partitions.

        Faust recovers the table up to ``end_offsets``, which on tansu is one
        produce batch short (its ListOffsets answers the last batch's base
        offset): the rows of the last batch before a crash were missing and
        their events applied twice. So before the first batch of a newly
        assigned partition the worker reads that changelog partition itself up
        to the high watermark its fetches report, keeping per user the row
        that is furthest along (rows are positions: the newest wins, so
        reading a row twice is harmless).
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
            await read_from_start(consumer, tps, keep_furthest, at_end)
        finally:
            await consumer.stop()
        self.synced |= partitions
        log.info("user rows complete partitions=%s rows_read=%d seconds=%.2f", sorted(partitions), n, time.monotonic() - t0)

    def _observe(self, batch: list[Any], result: Any, t0: float, t1: float, t2: float) -> None:
        m = self.metrics
        m.events.inc(result.applied)
        m.replays.inc(result.replays)
        m.records.inc(len(result.records))
        m.batch_size.observe(len(batch))
        m.step_seconds.observe(t2 - t1)
        m.batch_seconds.observe(time.perf_counter() - t0)
        m.users.set(len(self.users.data))
        last: dict[int, int] = {}
        for event in batch:
            last[event.message.partition] = event.message.offset
        for partition, offset in last.items():
            try:
                high = self.app.consumer.highwater(TP(self.watch_topic, partition))
            except Exception:  # not assigned any more (rebalance): no lag to report
                continue
            if high is not None:
                m.lag.labels(partition=str(partition)).set(max(0, high - offset - 1))
        log.debug("batch messages=%d applied=%d replays=%d records=%d waves=%d apply_ms=%.1f",
                  len(batch), result.applied, result.replays, len(result.records), result.waves, (t2 - t1) * 1e3)

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

    @app.agent(watch, name="update-users")
    async def update_users(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(settings.batch_size, settings.batch_timeout_s):
            # No event is applied before the item table caught up. The wait sits *inside* take_events on
            # purpose: there acks are off until the batch is done; awaiting before take_events lets Faust
            # ack (and later commit) events nobody processed - measured: ~20 per partition lost per restart.
            await worker.items.ready.wait()
            await worker.process(batch)

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
    async def forget_rows(app: Any, revoked: Any, **kwargs: Any) -> None:
        worker.synced.clear()  # Faust may re-recover the table from its short end offsets: complete it again

    app.dreamstream_worker = worker  # for tests and the bench
    return worker
