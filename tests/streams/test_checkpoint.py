"""The checkpoint's invariants (streams/checkpoint/checkpoint.py), against a fake feed, output and row store: no broker.

Every fake records what happened, in one shared journal, so a test reads
the order of "rows written", "delivery acknowledged" and "committed".
"""
from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from dreamstream.settings import Settings
from streams.checkpoint.catch_up import uncommitted_limit
from streams.checkpoint.checkpoint import Checkpoint
from streams.domain.state import flat_size, from_values


class Journal(list):
    def index_of(self, prefix: str) -> int:
        return next(i for i, entry in enumerate(self) if entry.startswith(prefix))


class FakeFeed:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.committed: dict[int, int] = {0: 0}
        self.next_offsets: dict[int, int] = {0: 0}
        self.ends: dict[int, int | None] = {0: None}

    def highwater(self, partition: int) -> int | None:
        return self.ends.get(partition)

    async def commit(self, offsets: dict[int, int]) -> bool:
        self.journal.append(f"commit {sorted(offsets.items())}")
        self.committed.update(offsets)
        return True


class FakeOutput:
    """Sends succeed at once unless ``block`` is set: then each delivery waits for ``release``."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.sent: list[tuple[dict[str, bytes], list[Any]]] = []
        self.watchers: list[tuple[bytes, bytes]] = []
        self.release = asyncio.Event()
        self.block = False
        self.cancel_next = False

    async def send(self, records: dict[str, bytes], letters: list[Any], watchers: Any = ()) -> list[Any]:
        if self.cancel_next:
            self.cancel_next = False
            raise asyncio.CancelledError  # the loop cancelled while handing over (a shutdown mid-batch)
        self.sent.append((dict(records), list(letters)))
        self.watchers.extend(watchers)
        what = sorted(records) + [key.decode() for key, _ in watchers]
        return [asyncio.ensure_future(self._deliver(what))] if (records or letters or watchers) else []

    async def _deliver(self, users: list[str]) -> None:
        if self.block:
            await self.release.wait()
        self.journal.append(f"delivered {users}")


class FakeRows:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.table: dict[bytes, Any] = {}
        self.fail = False

    async def write(self, rows: dict, pause: Any) -> None:
        if self.fail:
            raise OSError("broker away")
        self.journal.append(f"rows {sorted(k.decode() for k in rows)}")
        self.table.update({key: st for key, (st, _) in rows.items()})


def state(partition: int = 0, offset: int = 0, seq: int = 1):
    size = flat_size(2, 1, 1)
    return from_values(np.full(size, seq, np.float32), (2, 1, 1), partition=partition, offset=offset, seq=seq)


@pytest.fixture
def parts():
    journal = Journal()
    feed, output, rows = FakeFeed(journal), FakeOutput(journal), FakeRows(journal)
    settings = Settings(batch_size=10, commit_interval_s=3600.0, flush_spread=0.0)
    return journal, feed, output, rows, Checkpoint(feed, output, rows, settings)


def stage(cp: Checkpoint, feed: FakeFeed, user: str, offset: int, seq: int = 1) -> Any:
    feed.next_offsets[0] = offset + 1
    return cp.stage({user: state(0, offset, seq)}, {user: f"{user}{seq}".encode()}, {user: seq}, [], {0: offset}, None)


def test_commit_comes_after_rows_and_deliveries(parts) -> None:
    journal, feed, output, rows, cp = parts

    async def go() -> None:
        assert await stage(cp, feed, "a", 4)
        assert cp.get(b"a") is not None and b"a" not in rows.table  # readable, not yet in the table
        await cp.settle()

    asyncio.run(go())
    assert journal.index_of("rows") < journal.index_of("commit") and journal.index_of("delivered") < journal.index_of("commit")
    assert feed.committed == {0: 5} and b"a" in rows.table


def test_a_failed_flush_commits_nothing_and_surfaces_at_the_next_turn(parts) -> None:
    journal, feed, output, rows, cp = parts
    rows.fail = True

    async def go() -> None:
        await stage(cp, feed, "a", 4)
        cp.settings = cp.settings.model_copy(update={"commit_interval_s": 0.0})  # due now
        await cp.maybe_flush()  # starts the flush in the background
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        with pytest.raises(OSError):
            await cp.maybe_flush()  # the failed flush's error reaches the loop here

    asyncio.run(go())
    assert not any(entry.startswith("commit") for entry in journal)
    assert feed.committed == {0: 0}


def test_an_interrupted_batch_is_never_flushed(parts) -> None:
    journal, feed, output, rows, cp = parts

    async def go() -> None:
        await stage(cp, feed, "a", 4)
        output.cancel_next = True
        with pytest.raises(asyncio.CancelledError):
            await stage(cp, feed, "b", 5)  # cancelled while handing its records over
        assert cp.interrupted
        await cp.settle()

    asyncio.run(go())
    assert "rows ['a']" in journal and not any("b" in entry for entry in journal if entry.startswith("rows"))
    assert feed.committed == {0: 5}, "the interrupted batch's offset was committed"


def test_abort_forgets_everything_not_committed(parts) -> None:
    journal, feed, output, rows, cp = parts

    async def go() -> None:
        await stage(cp, feed, "a", 4)
        cp.abort()
        await cp.settle()

    asyncio.run(go())
    assert cp.get(b"a") is None and not rows.table and feed.committed == {0: 0}


def test_catch_up_holds_records_and_commits_nothing_until_done(parts) -> None:
    journal, feed, output, rows, cp = parts
    cp.settings = cp.settings.model_copy(update={"commit_interval_s": 0.0})

    async def go() -> None:
        cp.begin({0: 0})
        await stage(cp, feed, "a", 1, seq=2)
        await stage(cp, feed, "a", 2, seq=1)  # a replay cut differently: an older seq after a newer one
        await cp.maybe_flush()
        assert output.sent == [({}, []), ({}, [])] and cp.catch_up is not None
        assert not any(entry.startswith("commit") for entry in journal)
        feed.ends[0] = 3  # the partition's end is known and reached: the catch-up is done
        await cp.maybe_flush()
        assert cp.catch_up is None and output.sent[-1][0] == {"a": b"a2"}, "the newest record by seq is sent"
        await cp.settle()

    asyncio.run(go())
    assert feed.committed == {0: 3}


def test_backpressure_waits_for_the_flush_when_a_partition_runs_ahead(parts) -> None:
    journal, feed, output, rows, cp = parts
    output.block = True

    async def go() -> None:
        await stage(cp, feed, "a", 4)
        feed.next_offsets[0] = uncommitted_limit(10)  # far beyond the commit
        assert cp.too_far_ahead()
        waiting = asyncio.ensure_future(cp.maybe_flush())
        await asyncio.sleep(0.05)
        assert not waiting.done(), "it did not wait for the flush"
        output.release.set()
        await asyncio.wait_for(waiting, 5)

    asyncio.run(go())
    assert feed.committed == {0: 5}


def test_one_flush_at_a_time_keeps_rows_in_order(parts) -> None:
    journal, feed, output, rows, cp = parts
    cp.settings = cp.settings.model_copy(update={"commit_interval_s": 0.0})
    output.block = True

    async def go() -> None:
        await stage(cp, feed, "a", 1, seq=1)
        await cp.maybe_flush()  # flush 1 in flight, waiting for its delivery
        await stage(cp, feed, "a", 2, seq=2)
        await cp.maybe_flush()  # must not start a second flush
        assert cp.get(b"a").seq == 2
        output.release.set()
        await cp.settle()

    asyncio.run(go())
    assert [e for e in journal if e.startswith("rows")] == ["rows ['a']", "rows ['a']"]
    assert rows.table[b"a"].seq == 2 and feed.committed == {0: 3}


def test_a_dead_letter_the_dlq_refuses_stops_the_commit_and_surfaces(parts) -> None:
    """A refused letter (a missing DLQ, one over its size limit): nothing is committed past it, and the loop hears of it."""
    journal, feed, output, rows, cp = parts

    async def refused() -> None:
        raise OSError("watch-events-dlq refused the record")

    async def go() -> None:
        feed.next_offsets[0] = 5
        output.send = lambda records, letters, watchers=(): _sent([asyncio.ensure_future(refused())])
        await cp.stage({"a": state(0, 4)}, {}, {}, ["a letter"], {0: 4}, None)
        with pytest.raises(OSError, match="refused"):
            await cp.settle()

    asyncio.run(go())
    assert feed.committed == {0: 0} and not any(entry.startswith("commit") for entry in journal)


async def _sent(futures: list) -> list:
    return futures


def test_watchers_leave_at_once_even_catching_up_and_the_commit_waits_for_them(parts) -> None:
    """item-watchers records are not held like user records (each counts; the refiner drops replays), and are durable
    before the offsets behind them are committed."""
    journal, feed, output, rows, cp = parts
    output.block = True

    async def go() -> None:
        feed.next_offsets[0] = 3
        cp.begin({0: 0})  # catching up: user records are held
        await cp.stage({"a": state(0, 2)}, {"a": b"a1"}, {"a": 1}, [], {0: 2}, None, [(b"video-9", b"watch")])
        assert output.watchers == [(b"video-9", b"watch")] and output.sent[-1][0] == {}, "watchers sent, records held"
        feed.ends[0] = 3
        await cp.maybe_flush()  # the catch-up ends: the held record goes out
        settling = asyncio.ensure_future(cp.settle())
        await asyncio.sleep(0.05)
        assert not any(entry.startswith("commit") for entry in journal), "committed before the watcher was delivered"
        output.release.set()
        await asyncio.wait_for(settling, 5)

    asyncio.run(go())
    delivered = journal.index("delivered ['video-9']")
    assert delivered < next(i for i, e in enumerate(journal) if e.startswith("commit")) and feed.committed == {0: 3}
