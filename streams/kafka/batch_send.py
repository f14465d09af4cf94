"""Produce many records as a few Kafka record batches, one per partition.

Faust's ``producer.send`` costs ~0.4 ms a record here (its bookkeeping plus
aiokafka's per-record accumulator path); for a batch that touches a few
hundred users that was the largest part of the worker's time. aiokafka can
take a whole record batch at once (``create_batch`` / ``send_batch``), so the
worker groups its writes by partition and hands over one batch each. The
batches go through the same producer, so Faust's flush before committing
offsets still covers them. Records without a partition go where Kafka's
default partitioner (murmur2 of the key) puts them, as any client would.
"""
from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

from dreamstream.kafka.partitioner import kafka_partition
from streams.compat.aiokafka_metadata import wait_for_topic

# The largest record batch the worker's producers build: Kafka's default ``message.max.bytes`` (1,048,588)
# less its margin, so a stock broker takes every batch. Large on purpose: aiokafka's ``send_batch`` waits
# until the partition's previous batch has left in a request, and a request leaves only when the one before
# it is acknowledged. With 256 KB batches a live batch's records (~600 KB a partition at 31,000 events/s)
# needed three round trips in a row: sending them took 60-65 ms of every ~170 ms cycle, all of it waiting.
# In one batch a partition they leave in one request (send 4-8 ms, cycle ~65 ms, p50 ~390 -> ~150-225 ms).
MAX_BATCH_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Sent:
    """One record batch handed to the producer: where it goes, how many records, its delivery future."""

    topic: str
    partition: int
    count: int
    future: "asyncio.Future[Any]"

    async def last_offset(self) -> int:
        """Offset of the batch's last record once the broker acknowledged it."""
        meta = await self.future
        return meta.offset + self.count - 1


def partitions_of(producer: Any, topic: str) -> list[int]:
    """The topic's partitions as the producer's metadata knows them."""
    known = producer.client.cluster.partitions_for_topic(topic)
    if not known:
        raise RuntimeError(f"no partition metadata for topic {topic!r}; was it created?")
    return sorted(known)


async def send_records(producer: Any, topic: str, records: Iterable[tuple[bytes | None, bytes | None, int | None]]
                       ) -> list[Sent]:
    """Queue ``(key, value, partition or None)`` records as one or more batches per partition."""
    by_partition: dict[int, list[tuple[bytes | None, bytes | None]]] = defaultdict(list)
    all_partitions: list[int] | None = None
    for key, value, partition in records:
        if partition is None:
            if all_partitions is None:
                await wait_for_topic(producer, topic)
                all_partitions = partitions_of(producer, topic)
            partition = (all_partitions[kafka_partition(key, len(all_partitions))] if key is not None
                         else random.choice(all_partitions))  # keyless (a dead letter of a keyless message): any partition
        by_partition[partition].append((key, value))
    sent: list[Sent] = []
    for partition, rows in by_partition.items():
        batch, count = producer.create_batch(), 0
        for key, value in rows:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: ship it, start another
                sent.append(await _ship(producer, batch, topic, partition, count))
                batch, count = producer.create_batch(), 0
                batch.append(key=key, value=value, timestamp=None)
            count += 1
        sent.append(await _ship(producer, batch, topic, partition, count))
    return sent


async def _ship(producer: Any, batch: Any, topic: str, partition: int, count: int) -> Sent:
    """Hand a finished batch to the producer, closed, so it leaves without waiting out the linger.

    aiokafka holds an open batch for ``linger_ms`` in case more records
    come, and a closed one not at all. Ours are complete when handed over,
    so lingering only added Faust's 5 ms to every record's latency. Closing
    each batch keeps the producer's linger for everything else Faust sends,
    where it still gathers records (a zero linger for the whole producer
    made a SIGTERMed worker hang in a rebalance test; see
    docs/measurements.md).
    """
    batch.close()
    return Sent(topic, partition, count, await producer.send_batch(batch, topic, partition=partition))
