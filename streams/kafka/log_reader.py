"""Rebuilding state from a log read from offset 0 up to its true end.

The item table and the worker's user-row completion both rebuild in-memory
state from a compacted topic; they share how the topic is read and how its
end is recognised, so a fix to either (tansu's short end offsets, below)
reaches both.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable


async def caught_up(consumer: Any, tps: list) -> bool:
    """True when the consumer's position reached the high watermark of every partition.

    The high watermark is the one reported by fetch responses, not
    ``end_offsets``: tansu's ListOffsets answers the base offset of the last
    produced batch (measured: 2 after offsets 0..50 were written), which would
    declare a table complete one batch too early.
    """
    for tp in tps:
        high = consumer.highwater(tp)
        if high is None or await consumer.position(tp) < high:
            return False
    return True


async def read_from_start(consumer: Any, tps: list, handle: Callable[[Any], None],
                          after_fetch: Callable[[], Awaitable[bool]], start: dict[Any, int] | None = None) -> None:
    """Assign ``tps``, seek to their beginning (or to ``start[tp]``) and hand every record to ``handle``.

    After each fetch ``after_fetch()`` decides: True stops reading (a reader
    that only needs the log up to its end), False goes on (a follower).
    """
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    for tp, offset in (start or {}).items():
        if offset > 0:
            consumer.seek(tp, offset)
    while True:
        batches = await consumer.getmany(timeout_ms=200, max_records=50_000)
        for records in batches.values():
            for record in records:
                handle(record)
        if await after_fetch():
            return
