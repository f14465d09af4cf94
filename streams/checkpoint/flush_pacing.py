"""A timed flush sends its changelog rows spread over the commit interval, not in one burst.

Why: a flush writes a second's rows at once (13-21 MB at 5,000-12,500
events/s). On a broker that shares the box, ingesting that burst took
0.4-1.2 s of its CPU in one go, and the fetches and produces of everyone
else waited behind it: those events made the p99. Sent as ~1 MB requests
paced over part of the interval, the broker ingests a stream instead. At
6,500 events/s p99 went from 259-310 ms to 204-263 ms in alternating runs.

Only the flush a timer starts is paced. A flush the worker has to wait for
(the cache is full, a partition is too far ahead of its commit, a
revocation or shutdown settles) is hurried: it stops pausing at once.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import TypeVar

FLUSH_CHUNK_BYTES = 1 << 20  # one request's worth of rows: the changelog producer's batch size

Row = TypeVar("Row", bound=tuple)


def byte_chunks(rows: Sequence[Row], limit: int = FLUSH_CHUNK_BYTES,
                size: Callable[[Row], int] = lambda row: len(row[1])) -> list[list[Row]]:
    """``(key, value, partition)`` rows in order, cut into runs of at most ``limit`` value bytes (at least one row each).

    ``size``: a row's value bytes, for rows whose value is not encoded yet.
    """
    chunks: list[list[Row]] = []
    total = limit
    for row in rows:
        n = size(row)
        if total + n > limit:
            chunks.append([])
            total = 0
        chunks[-1].append(row)
        total += n
    return chunks


class FlushPacer:
    """Pauses between a flush's chunks, up to ``spread_s`` in all, unless hurried."""

    def __init__(self, spread_s: float) -> None:
        self.spread_s = spread_s
        self._hurry = asyncio.Event()

    def begin(self, paced: bool) -> None:
        """A new flush starts: paced (a timer's), or hurried from the start (someone waits for it)."""
        if paced and self.spread_s > 0:
            self._hurry.clear()
        else:
            self._hurry.set()

    def hurry(self) -> None:
        """Someone waits for the flush in flight: no more pauses."""
        self._hurry.set()

    async def pause(self, chunks: int) -> None:
        """The pause after one of ``chunks`` chunks (none when hurried)."""
        if chunks > 1 and not self._hurry.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), self.spread_s / chunks)
