"""Flush pacing: rows cut into ~1 MB requests, pauses between them, none once someone waits for the flush."""
from __future__ import annotations

import asyncio
import time

from streams.checkpoint.flush_pacing import FlushPacer, byte_chunks


def rows(*sizes: int) -> list[tuple[bytes, bytes, int]]:
    return [(str(i).encode(), b"x" * n, 0) for i, n in enumerate(sizes)]


def test_chunks_keep_order_and_stay_under_the_limit_unless_one_row_is_bigger() -> None:
    chunks = byte_chunks(rows(40, 40, 30, 100, 10), limit=100)
    assert [[len(r[1]) for r in c] for c in chunks] == [[40, 40], [30], [100], [10]]
    assert [r for c in chunks for r in c] == rows(40, 40, 30, 100, 10)
    assert byte_chunks(rows(250), limit=100) == [rows(250)]  # a row over the limit still goes, alone
    assert byte_chunks([], limit=100) == []


def test_a_timed_flush_pauses_and_a_hurried_one_does_not() -> None:
    async def scenario() -> tuple[float, float, float]:
        pacer = FlushPacer(spread_s=0.2)
        pacer.begin(paced=True)
        t0 = time.monotonic()
        await pacer.pause(chunks=2)  # 0.2 s over 2 chunks
        paced = time.monotonic() - t0

        slow = FlushPacer(spread_s=60.0)
        slow.begin(paced=True)
        waiting = asyncio.ensure_future(slow.pause(chunks=2))  # would sleep 30 s
        await asyncio.sleep(0.05)
        t1 = time.monotonic()
        slow.hurry()  # a revocation settles: the flush must finish now
        await waiting
        hurried = time.monotonic() - t1

        slow.begin(paced=False)  # a flush someone waits for from the start
        t2 = time.monotonic()
        await slow.pause(chunks=2)
        return paced, hurried, time.monotonic() - t2

    paced, hurried, unpaced = asyncio.run(scenario())
    assert paced >= 0.09
    assert hurried < 5 and unpaced < 5  # far below the 30 s the pause would have lasted


def test_chunks_can_be_cut_by_a_size_before_the_values_exist() -> None:
    """The flush chunks states by their encoded size and encodes one chunk at a time."""
    pending = [(b"k", n, 0) for n in (40, 40, 30, 100, 10)]
    assert byte_chunks(pending, limit=100, size=lambda row: row[1]) == [pending[:2], pending[2:3], pending[3:4], pending[4:]]
