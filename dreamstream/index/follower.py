"""Consuming ``item-vectors`` into the :class:`~dreamstream.index.store.ItemStore`.

The topic is compacted and keyed by video id, so reading it from the start
gives the latest vector of every item and a null value (tombstone) removes
one. The indexer reads every partition itself (manual assignment, no
consumer group): each indexer keeps the whole catalogue, and a restart
simply rebuilds its store from the compacted log.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from dreamstream import codec
from dreamstream.index.store import ItemStore
from dreamstream.kafka.security import kafka_python_options
from dreamstream.settings import Settings
from dreamstream.topics import ITEM_VECTORS
from dreamstream.vectors import item_vector_of

log = logging.getLogger(__name__)


@dataclass
class ApplyStats:
    puts: int = 0
    deletes: int = 0
    rejected: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.puts or self.deletes)


def apply_records(store: ItemStore, records: Iterable[tuple[bytes | None, bytes | None]], stats: ApplyStats) -> None:
    """Apply ``item-vectors`` records (key, value) in order: a vector replaces the item's, a tombstone removes it.

    Only each key's last record counts (the log is ordered per key), so a
    poll's records collapse to one final state per item and the vectors go
    into the store in one vectorised call. The store's width is fixed before
    any record (``dreamstream.index.width``): a record of another width is
    refused, never the one that sets it.
    """
    if store.dim is None:
        raise ValueError("the store's width must be set before records are applied (dreamstream.index.width)")
    final: dict[str, np.ndarray | None] = {}
    for key, value in records:
        try:
            item_id = codec.id_of_key(key) if key is not None else None
        except ValueError as err:
            item_id = None
            log.warning("item-vectors record rejected: %s", err)
        if item_id is None:
            stats.rejected += 1
            continue
        if value is None:
            final[item_id] = None
            stats.deletes += 1
            continue
        try:
            vector = item_vector_of(value, store.dim)
        except ValueError as err:  # garbage of any kind is refused, never fatal: the topic is compacted, a crash would loop
            stats.rejected += 1
            log.warning("item-vectors record rejected key=%s reason=%s", item_id[:64], str(err)[:200])
            continue
        final[item_id] = vector
        stats.puts += 1
    puts = {k: v for k, v in final.items() if v is not None}
    for item_id, vector in final.items():
        if vector is None:
            store.delete(item_id)
    if puts:
        store.put_many(list(puts), np.stack(list(puts.values())))


class ItemFollower:
    """Reads every partition of ``item-vectors`` from the beginning into a store."""

    def __init__(self, settings: Settings, store: ItemStore) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.store = store
        self.topic = settings.topic(ITEM_VECTORS)
        self.consumer = KafkaConsumer(
            **kafka_python_options(settings),
            enable_auto_commit=False,
            group_id=None,
            max_poll_records=20_000,
            fetch_max_bytes=64 << 20,
            max_partition_fetch_bytes=16 << 20,
            client_id="dreamstream-indexer",
        )
        partitions = self.consumer.partitions_for_topic(self.topic)
        if not partitions:
            raise RuntimeError(f"topic {self.topic} does not exist; create it with `dreamstream topics`")
        self.partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self.consumer.assign(self.partitions)
        self.consumer.seek_to_beginning(*self.partitions)

    def poll(self, timeout_s: float) -> ApplyStats:
        """Apply whatever arrives within ``timeout_s``."""
        stats = ApplyStats()
        batches = self.consumer.poll(timeout_ms=int(timeout_s * 1000))
        apply_records(self.store, ((rec.key, rec.value) for records in batches.values() for rec in records), stats)
        return stats

    def lag(self) -> int:
        """Records not yet read (0 = caught up with the log end)."""
        ends = self.consumer.end_offsets(self.partitions)
        return sum(max(0, ends[tp] - self.consumer.position(tp)) for tp in self.partitions)

    def close(self) -> None:
        self.consumer.close()
