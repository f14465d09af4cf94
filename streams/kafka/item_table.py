"""The item table: every item vector, on every worker, followed from the compacted ``item-vectors`` topic.

The table follows the compacted ``item-vectors`` topic with a plain,
group-less consumer over all its partitions: every worker holds every
item, a null value removes one. At start it reads up to the end offsets it
found (by fetch high watermarks, see :func:`streams.kafka.log_reader.caught_up`) and only then sets ``ready``; the user agent waits for ``ready``
before it touches ``watch-events``, so no event meets a half-loaded
catalogue. (Faust's GlobalTable was the first choice; on this broker its
recovery never completed - measured: timers and agents never started - so
this is its equivalent in ~50 lines, with decoded vectors as values. It is
kept on Kafka too: a group-less follower is what a GlobalTable is, without
a changelog of its own. Workaround for: tansu. Remove when: never needed;
replace by a GlobalTable only if standby copies of the items matter.)
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

import numpy as np

from dreamstream import codec
from dreamstream.kafka.security import aiokafka_options
from dreamstream.settings import Settings
from dreamstream.vectors import UnreadableRecord, item_vector_of
from streams.compat.aiokafka_metadata import refresh_metadata
from streams.kafka.log_reader import caught_up, read_from_start
from streams.kafka.transient import TRANSIENT

log = logging.getLogger(__name__)


class ItemTable:
    """``get(video) -> float32 [D] | None``, kept up to date from ``item-vectors``."""

    def __init__(self, settings: Settings, topic: str, dim: Callable[[], int | None] = lambda: None,
                 on_refused: Callable[[str], None] = lambda reason: None) -> None:
        self.settings = settings
        self.topic = topic
        self.dim = dim  # the served bundle's D: a vector of another width is refused
        self.on_refused = on_refused  # counts a refused record (the worker's metric)
        self.vectors: dict[str, np.ndarray] = {}
        self.ready = asyncio.Event()
        self.caught_up_s: float | None = None

    def get(self, video: str) -> np.ndarray | None:
        return self.vectors.get(video)

    def __len__(self) -> int:
        return len(self.vectors)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One item-vectors record: a vector, or a tombstone (null) removing the item."""
        if key is None:
            return
        try:
            video = codec.id_of_key(key)
        except ValueError as err:  # no item has such an id: a tombstone or a vector under it is refused alike
            self.on_refused("unreadable")
            log.warning("item-vectors record refused: %s", err)
            return
        if value is None:
            self.vectors.pop(video, None)
            return
        try:
            vector = item_vector_of(value, self.dim())
        except ValueError as err:  # garbage of any kind: refused, never stored, never fatal
            self.on_refused("unreadable" if isinstance(err, UnreadableRecord) else "bad-vector")
            log.warning("item-vectors record refused video=%r: %s; the previous vector (if any) is kept", video[:64],
                        str(err)[:200])
            return
        self.vectors[video] = vector

    async def follow(self) -> None:
        """Read item-vectors from the beginning, set ``ready`` at the end offsets, then keep following."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        t0 = time.monotonic()
        while True:  # a worker started while the broker is away waits for it (the feed and Faust do too)
            consumer = AIOKafkaConsumer(**aiokafka_options(self.settings), group_id=None,
                                        enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=100)
            try:
                await consumer.start()
                break
            except TRANSIENT as err:
                log.warning("item table: no broker yet (%r); retrying in 1s", err)
                await consumer.stop()
                await asyncio.sleep(1.0)
        try:
            parts = None
            while not parts:
                parts = await refresh_metadata(consumer) and consumer.partitions_for_topic(self.topic)
                if not parts:
                    await asyncio.sleep(0.2)
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]

            async def mark_ready() -> bool:
                if not self.ready.is_set() and await caught_up(consumer, tps):
                    self.caught_up_s = time.monotonic() - t0
                    log.info("item table caught up items=%d seconds=%.2f", len(self.vectors), self.caught_up_s)
                    self.ready.set()
                return False  # keep following: new and removed items arrive all the time

            await read_from_start(consumer, tps, lambda m: self.apply(m.key, m.value), mark_ready)
        finally:
            await consumer.stop()
