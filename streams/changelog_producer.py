"""The producer the row cache's flushes write the changelog with: its own connection, so records never wait behind rows.

aiokafka keeps one request in flight per broker connection. On Faust's
producer a flush's rows (a second's worth of whole-state rows, ~20 MB at
12,500 events/s) were queued ahead of the next batches' ``user-embeddings``
records, which then waited up to the whole flush (1.6 s on tansu) to leave.
A second producer gives the rows their own connection and queue.
"""
from __future__ import annotations

from typing import Any

from dreamstream.settings import Settings
from streams.batch_send import MAX_BATCH_BYTES


async def open_changelog_producer(settings: Settings) -> Any:
    """Started producer for changelog rows: acks from all in-sync replicas, large batches, one linger-free send per flush."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=0,
                                max_batch_size=MAX_BATCH_BYTES, max_request_size=32 * 1024 * 1024, request_timeout_ms=40_000,
                                client_id=f"{settings.topic_prefix}dreamstream-changelog")
    await producer.start()
    return producer
