"""The user table's changelog, written by the worker's own producer in ~1 MB requests, each into the table once acknowledged.

Why its own producer: aiokafka keeps one request in flight per broker
connection. On Faust's producer a flush's rows (a second's worth of
whole-state rows, ~20 MB at 12,500 events/s) were queued ahead of the next
batches' ``user-embeddings`` records, which then waited up to the whole
flush (1.6 s on tansu) to leave. A second producer gives the rows their own
connection and queue.

The table is written with the *source* partition of the event, as Faust's
own ``table[key] = value`` does inside a stream, so a user's row lives in
the changelog partition of the watch-events partition that owns the user,
whatever partitioner the producers used.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable

from dreamstream.kafka.security import aiokafka_options
from dreamstream.settings import Settings
from streams.checkpoint.flush_pacing import FLUSH_CHUNK_BYTES, byte_chunks
from streams.compat.faust_tables import changelog_topic, mark_persisted, put_row
from streams.domain import state as state_mod
from streams.kafka.batch_send import MAX_BATCH_BYTES, send_records
from streams.kafka.reachable import start_when_reachable

log = logging.getLogger("streams.worker")


class ChangelogRows:
    """Reads rows from a Faust table; writes them through the changelog (``write``) with its own producer."""

    def __init__(self, table: Any, settings: Settings, observe_encode: Callable[[float], None] | None = None) -> None:
        self.table, self.settings = table, settings
        self.observe_encode = observe_encode or (lambda seconds: None)  # each request's encode time (it holds the loop)
        self.chunk_bytes = FLUSH_CHUNK_BYTES  # a request's rows; the worker sets it by its lag (streams.kafka.batch_sizing)
        self.producer: Any = None

    async def start(self) -> None:
        """Start the producer: acks from all in-sync replicas, large batches, no linger (a flush's rows are complete)."""
        from aiokafka import AIOKafkaProducer

        s = self.settings
        self.producer = await start_when_reachable(lambda: AIOKafkaProducer(
            **aiokafka_options(s), acks="all", linger_ms=0, max_batch_size=MAX_BATCH_BYTES,
            max_request_size=32 * 1024 * 1024, request_timeout_ms=40_000,
            client_id=f"{s.topic_prefix}dreamstream-changelog"), "changelog producer")

    async def stop(self) -> None:
        """Stop the producer (once; a second call does nothing)."""
        producer, self.producer = self.producer, None
        if producer is not None:
            await producer.stop()

    def get(self, key: bytes) -> state_mod.UserState | None:
        raw = self.table.get(key)
        return state_mod.decode(raw) if raw is not None else None

    def __len__(self) -> int:
        return len(self.table.data)

    async def write(self, rows: dict[bytes, tuple[state_mod.UserState, int]],
                    pause: Callable[[int], Awaitable[None]]) -> None:
        """Rows to the changelog in requests of ``chunk_bytes``, ``pause`` between them, each into the table once acknowledged.

        Encoded a request at a time: encoding all ~5,000 rows up front
        stalled the batch loop 14-31 ms (the debug line reports both times).
        """
        if self.producer is None:
            raise RuntimeError("the changelog producer is not started (or already stopped)")
        t0 = time.perf_counter()
        states = [(key, st, partition) for key, (st, partition) in rows.items()]
        chunks = byte_chunks(states, limit=self.chunk_bytes, size=lambda row: state_mod.row_size(row[1]))
        encode_s = 0.0
        for i, chunk in enumerate(chunks):
            if i:
                await pause(len(chunks))
            t1 = time.perf_counter()
            encoded = [(key, state_mod.encode(st), partition) for key, st, partition in chunk]
            self.observe_encode(time.perf_counter() - t1)
            encode_s += time.perf_counter() - t1
            await write_rows(self.producer, self.table, encoded)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("changelog rows=%d chunks=%d encode_ms=%.1f write_ms=%.1f", len(rows), len(chunks),
                      encode_s * 1e3, (time.perf_counter() - t0 - encode_s) * 1e3)


async def write_rows(producer: Any, table: Any, encoded: list[tuple[bytes, bytes, int]]) -> None:
    """Rows (key, value, partition) to ``table``'s changelog, each into the table once the broker acknowledged it.

    What Faust's ``table[key] = value`` does inside a stream, for rows built
    from a batch (no event in hand: ``streams.compat.faust_tables``).
    """
    for sent in await send_records(producer, changelog_topic(table), encoded):
        mark_persisted(table, sent.topic, sent.partition, await sent.last_offset())
    for key, value, partition in encoded:
        put_row(table, key, value, partition)
