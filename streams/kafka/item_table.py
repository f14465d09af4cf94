"""The item table: every item vector, on every worker, followed from the compacted ``item-vectors`` topic.

The table follows the compacted ``item-vectors`` topic with a plain,
group-less consumer over all its partitions: every worker holds every
item, a null value removes one. The vectors live in an item store
(``streams.items``: a compact in-memory table, or RocksDB with a hot cache)
that also keeps the offsets it has applied; a store that persists them
(RocksDB) makes a restart read only the records written since (the
GlobalKTable pattern), the memory store reads from the beginning. At start
it reads up to the end offsets it found (by fetch high watermarks, see
:func:`streams.kafka.log_reader.caught_up`) and only then sets ``ready``;
the user agent waits for ``ready`` before it touches ``watch-events``, so
no event meets a half-loaded catalogue. (Faust's GlobalTable was the first
choice; on this broker its recovery never completed - measured: timers and
agents never started - so this is its equivalent, with decoded vectors as
values. It is kept on Kafka too: a group-less follower is what a
GlobalTable is, without a changelog of its own. Workaround for: tansu.
Remove when: never needed; replace by a GlobalTable only if standby copies
of the items matter.)

Records of one fetch are decoded one by one (a bad one is refused and
counted, the previous vector kept) and written to the store together, with
the offsets they reach, before anything else runs on the event loop: a
batch of events never sees half a fetch.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

import numpy as np

from dreamstream import codec
from dreamstream.kafka.security import aiokafka_options
from dreamstream.settings import Settings
from dreamstream.vectors import UnreadableRecord, checked_matrix, item_record_parts
from streams.compat.aiokafka_metadata import refresh_metadata
from streams.items.store import ItemStore, open_item_store
from streams.kafka.log_reader import caught_up, read_from_start
from streams.kafka.reachable import start_when_reachable

log = logging.getLogger(__name__)


class ItemTable:
    """Follows ``item-vectors`` into an item store; ``store.lookup`` serves the worker's batches."""

    def __init__(self, settings: Settings, topic: str, dim: Callable[[], int | None] = lambda: None,
                 on_refused: Callable[[str], None] = lambda reason: None, store: ItemStore | None = None,
                 on_read: Callable[[int], None] = lambda n: None) -> None:
        self.settings = settings
        self.topic = topic
        self.dim = dim  # the served bundle's D: a vector of another width is refused
        self.on_refused = on_refused  # counts a refused record (the worker's metric)
        self.on_read = on_read  # counts records read from the topic (a warm restart reads only the tail)
        self.store = store if store is not None else open_item_store(settings, topic)
        # this fetch's (video, vector bytes or None for a tombstone, live flag), in log order
        self.pending: list[tuple[str, bytes | None, bool]] = []
        self.reached: dict[int, int] = {}  # per partition: the offset after this fetch's last record
        self.read = 0  # records of this fetch (counted by ``on_read`` at the flush)
        self.ready = asyncio.Event()
        self.caught_up_s: float | None = None
        self.started_at: dict[int, int] = {}  # the offsets the last start read from (the store's, or 0)

    def get(self, video: str) -> np.ndarray | None:
        self.flush()
        return self.store.get(video)

    def __len__(self) -> int:
        return len(self.store)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One item-vectors record: a vector, or a tombstone (null) removing the item (checked and stored at :meth:`flush`)."""
        if key is None:
            return
        try:
            video = codec.id_of_key(key)
        except ValueError as err:  # no item has such an id: a tombstone or a vector under it is refused alike
            self.on_refused("unreadable")
            log.warning("item-vectors record refused: %s", err)
            return
        if value is None:
            self.pending.append((video, None, False))
            return
        try:
            self.pending.append((video, *item_record_parts(value)))
        except UnreadableRecord as err:  # garbage of any kind: refused, never stored, never fatal
            self._refuse(video, "unreadable", err)

    def _refuse(self, video: str, label: str, err: Exception | str) -> None:
        self.on_refused(label)
        log.warning("item-vectors record refused video=%r: %s; the previous vector (if any) is kept", video[:64],
                    str(err)[:200])

    def handle(self, record: Any) -> None:
        """A consumed record: applied, and its offset remembered for the store's commit."""
        self.apply(record.key, record.value)
        self.reached[record.partition] = record.offset + 1
        self.read += 1

    def flush(self) -> None:
        """Check the pending vectors (one vectorised check), write them and the tombstones, then the offsets they reach."""
        if self.pending:
            pending, self.pending = self.pending, []
            raws = [raw for _, raw, _ in pending if raw is not None]
            width = self.dim() or (len(raws[0]) // 4 if raws else 0)
            matrix, errors = checked_matrix(raws, width)
            final: dict[str, tuple[int, bool] | None] = {}  # per video, in log order: its last good row (None: removed)
            row = 0
            for video, raw, live in pending:
                if raw is None:
                    final[video] = None
                    continue
                if errors[row] is None:
                    final[video] = (row, live)
                else:  # a bad vector: the one before it (in this fetch or the store) is kept
                    self._refuse(video, "bad-vector", errors[row])
                row += 1
            removed = [v for v, r in final.items() if r is None]
            self.store.delete(removed)
            self.store.mark_live(removed, [False] * len(removed))
            kept = [(v, r) for v, r in final.items() if r is not None]
            if kept:
                videos = [v for v, _ in kept]
                stored = self.store.put(videos, matrix[[r for _, (r, _) in kept]])
                self._refuse_unstored(videos, stored)
                self.store.mark_live(videos, [live and ok for (_, (_, live)), ok in zip(kept, stored.tolist())])
        if self.reached:
            self.store.commit(self.reached)
            self.reached = {}
            self.on_read(self.read)
            self.read = 0

    def _refuse_unstored(self, videos: list[str], stored: np.ndarray) -> None:
        """Videos the store could not take (memory store at its ceiling, or an id-hash collision): counted and logged."""
        refused = [v for v, ok in zip(videos, stored.tolist()) if not ok]
        if not refused:
            return
        for _ in refused:
            self.on_refused("store-full")
        log.error("item store refused %d vectors (first %r): full at DREAMSTREAM_ITEM_CACHE_MB=%d or an id-hash "
                  "collision; their events become dead letters (docs/scaling.md#item-store)", len(refused),
                  refused[0][:64], self.settings.item_cache_mb)

    async def follow(self) -> None:
        """Read item-vectors from the beginning, set ``ready`` at the end offsets, then keep following."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        t0 = time.monotonic()
        consumer = await start_when_reachable(  # a worker started while the broker is away waits for it
            lambda: AIOKafkaConsumer(**aiokafka_options(self.settings), group_id=None, enable_auto_commit=False,
                                     auto_offset_reset="earliest", fetch_max_wait_ms=100), "item table")
        try:
            parts = None
            while not parts:
                parts = await refresh_metadata(consumer) and consumer.partitions_for_topic(self.topic)
                if not parts:
                    await asyncio.sleep(0.2)
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]

            async def mark_ready() -> bool:
                self.flush()  # before any await: no batch of events sees half a fetch
                if not self.ready.is_set() and await caught_up(consumer, tps):
                    self.caught_up_s = time.monotonic() - t0
                    log.info("item table caught up items=%d seconds=%.2f bytes=%d", len(self.store), self.caught_up_s,
                             self.store.resident_bytes())
                    self.ready.set()
                return False  # keep following: new and removed items arrive all the time

            self.started_at = {tp.partition: self.store.offsets().get(tp.partition, 0) for tp in tps}
            log.info("item table reading %s from offsets %s (items stored: %d)", self.topic, self.started_at,
                     len(self.store))
            await read_from_start(consumer, tps, self.handle, mark_ready,
                                  start={tp: self.started_at[tp.partition] for tp in tps})
        finally:
            await consumer.stop()
