"""Repair for the development broker: complete the table rows Faust's recovery left one produce batch short.

Faust recovers the user table up to ``end_offsets``, which on tansu is one
produce batch short (its ListOffsets answers the last batch's base offset):
the rows of the last batch before a crash were missing and their events
applied twice. So after every rebalance the worker reads each assigned
changelog partition itself, from where Faust's recovery got to up to the
high watermark its fetches report, keeping per user the row that is
furthest along (rows are positions: the newest wins, so reading a row twice
is harmless). For the same reason Faust's recovery consistency check
(stored offset beyond the end offset) is switched off on tansu
(:func:`faust_settings`).

The item refiner's table (``streams.item_refiner``) is completed the same
way, the newest row of a video winning: without it a video's last watches
before a crash were lost from its sum (their offsets were committed).

On for tansu only (``Settings.dev_broker``); on Kafka, Faust's recovery
reaches the true end by itself.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from dreamstream.kafka.security import aiokafka_options
from dreamstream.settings import Settings
from streams.compat import shim
from streams.compat.faust_tables import changelog_topic, drop_buffered_rows, put_row, recovered_through
from streams.domain import state as state_mod
from streams.kafka.log_reader import caught_up, read_from_start

SHIM = shim(__name__, "tansu", ("0", "0"), "tansu's ListOffsets answers the true end offset (tests/foundation)")
log = logging.getLogger("streams.worker")


def faust_settings(settings: Settings) -> dict[str, Any]:
    """Faust settings the development broker needs: no recovery consistency check (its end offsets are short)."""
    return {"recovery_consistency_check": False} if settings.dev_broker else {}


async def complete_rows(app: Any, table: Any, settings: Settings, partitions: set[int],
                        replaces: Callable[[bytes, bytes], bool] | None = None) -> None:
    """Make sure the table holds the newest durable row of every key of these partitions (tansu only).

    ``replaces(new, old)``: does row ``new`` replace ``old``? (default: the user
    rows' positions, :func:`further`; rows read later in the log are newer).
    """
    replaces = replaces or further
    if not settings.dev_broker or not partitions:
        return
    from aiokafka import AIOKafkaConsumer, TopicPartition

    t0 = time.monotonic()
    topic = changelog_topic(table)
    log.info("completing %s rows partitions=%s", table.name, sorted(partitions))
    consumer = AIOKafkaConsumer(**aiokafka_options(settings), group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    read = 0
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    start = {tp: recovered_through(app, topic, tp.partition) for tp in tps}

    def keep_furthest(m: Any) -> None:
        nonlocal read
        read += 1
        if m.value is None:
            return
        have = table.data.get(m.key)
        if have is None or replaces(m.value, have):
            put_row(table, m.key, m.value, m.partition)

    async def at_end() -> bool:
        if await caught_up(consumer, tps):
            return True
        if time.monotonic() - t0 > 5:
            log.info("completing %s rows: positions=%s highwaters=%s", table.name,
                     {tp.partition: await consumer.position(tp) for tp in tps},
                     {tp.partition: consumer.highwater(tp) for tp in tps})
        return False

    try:
        await read_from_start(consumer, tps, keep_furthest, at_end, start)
    finally:
        await consumer.stop()
    drop_buffered_rows(app, table, partitions)
    log.info("%s rows complete partitions=%s from=%s rows_read=%d seconds=%.2f", table.name, sorted(partitions),
             {tp.partition: o for tp, o in start.items()}, read, time.monotonic() - t0)


def further(new: bytes, old: bytes) -> bool:
    """Is row ``new`` further along its user's stream than row ``old``?"""
    a, b = state_mod.decode(new), state_mod.decode(old)
    if a.partition != b.partition:
        return True  # the changelog is read in order: a later row for another partition is the current one
    return (a.offset, a.index) > (b.offset, b.index)
