"""The stall watchdog: a worker that has input waiting but applies and commits nothing is made to die loudly.

Why: the classic failure of long-running Faust workers is not a crash but a
consumer that silently stops (a hung await, a wedged fetcher, a lost
assignment that never comes back) while its lag climbs; the process looks
alive to every liveness probe. The watchdog compares two numbers once per
tick: the input lag of the partitions this worker owns (high watermark minus
committed offset) and a progress count: committed offsets only. Batches
that are processed but never committed are not progress: a dead-letter
topic that refuses letters (missing, or a letter over its size limit) left
a worker applying batches and redoing them from the last commit forever,
and a watchdog counting batches never fired. Lag above zero with no progress for ``DREAMSTREAM_WATCHDOG_S``
seconds is a stall: the ``dreamstream_stalled`` gauge goes to 1,
``dreamstream_stalls`` counts it, an error is logged with the lag, and with
``DREAMSTREAM_WATCHDOG_ACTION=exit`` (the default) the process exits with
code :data:`EXIT_STALLED` so the orchestrator starts a fresh one, which
resumes exactly from the changelog and the committed offsets.

Rebalances and table recovery are not stalls (nothing can be applied then),
nor is an idle worker (no lag). The check runs in its own thread so that a
loop blocked by synchronous code is caught too.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from dreamstream.logs import flush_logs
from dreamstream.settings import Settings

log = logging.getLogger("streams.ops.watchdog")

EXIT_STALLED = 70  # EX_SOFTWARE: distinct from crashes (1) and signals (128+n)
HANG_HOOK = "DSTEST_HANG_AFTER_BATCHES"  # test-only: make processing hang after N batches


@dataclass
class StallDetector:
    """Pure stall logic over (lag, progress) observations, with an injectable clock."""

    threshold_s: float
    clock: Callable[[], float] = time.monotonic
    since: float | None = None  # when the current no-progress-with-lag period began
    progress: int | None = None
    lag_at_start: int = 0
    stalled: bool = False
    stalls: int = field(default=0)

    def observe(self, lag: int, progress: int, busy: bool = False) -> bool:
        """Record one sample; True while stalled. ``busy`` = rebalancing or recovering (never a stall)."""
        now = self.clock()
        if busy or lag <= 0 or progress != self.progress:
            self.progress, self.since, self.lag_at_start, self.stalled = progress, now, max(lag, 0), False
            return False
        if self.since is None:
            self.since = now
        if not self.stalled and now - self.since >= self.threshold_s:
            self.stalled = True
            self.stalls += 1
        return self.stalled

    def stalled_for(self) -> float:
        return 0.0 if self.since is None else self.clock() - self.since


def consumer_position(feed: Any, ends: dict[int, int] | None = None) -> tuple[int, int]:
    """(lag, committed sum) over the watch-events partitions this worker's feed owns.

    The end of a partition is the larger of the fetch high watermark and
    ``ends`` (end offsets asked of the broker by :meth:`Watchdog.sample_ends`):
    a partition the consumer never fetches again - the stall seen here after a
    rebalance - has no fresh high watermark at all.
    """
    lag = committed_sum = 0
    for partition in list(feed.owned):
        committed = feed.committed.get(partition) or 0
        end = max(feed.highwater(partition) or 0, (ends or {}).get(partition) or 0)
        committed_sum += committed
        lag += max(0, end - committed)
    return lag, committed_sum


class Watchdog:
    """Samples the worker every ``threshold/4`` seconds in a daemon thread and acts on a stall."""

    def __init__(self, app: Any, worker: Any, settings: Settings, exit: Callable[[int], None] = os._exit) -> None:
        self.app = app
        self.worker = worker
        self.settings = settings
        self.detector = StallDetector(settings.watchdog_s)
        self.exit = exit
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.ends: dict[Any, int] = {}

    async def sample_ends(self) -> None:
        """On the loop: the broker's end offsets of the owned watch-events partitions (ListOffsets)."""
        try:
            self.ends = await self.worker.feed.end_offsets()
        except Exception as err:  # broker away or rebalancing: keep the last answer
            log.debug("watchdog: end offsets unavailable (%r)", err)

    def progress(self) -> tuple[int, int]:
        """(lag, progress): progress moves with every commit (the committed offsets' sum and the commits count)."""
        lag, committed = consumer_position(self.worker.feed, self.ends)
        commits = self.worker.metrics.registry.get_sample_value("dreamstream_commits_total") or 0
        return lag, int(commits) + committed

    def busy(self) -> bool:
        return bool(getattr(self.app, "rebalancing", False) or getattr(self.app, "in_recovery", False)
                    or not self.worker.items.ready.is_set())

    def tick(self) -> None:
        try:
            lag, progress = self.progress()
        except Exception as err:  # the consumer is not started yet, or is being replaced
            log.debug("watchdog: no consumer position yet (%r)", err)
            return
        was = self.detector.stalled
        stalled = self.detector.observe(lag, progress, self.busy())
        self.worker.metrics.stalled.set(1 if stalled else 0)
        if stalled and not was:
            self.worker.metrics.stalls.inc()
            log.error("consumer stalled: lag=%d (was %d) with nothing committed for %.1fs "
                      "(DREAMSTREAM_WATCHDOG_S=%s); action=%s", lag, self.detector.lag_at_start,
                      self.detector.stalled_for(), self.settings.watchdog_s, self.settings.watchdog_action)
            if self.settings.watchdog_action == "exit":
                flush_logs()
                self.exit(EXIT_STALLED)
        elif was and not stalled:
            log.warning("consumer recovered from a stall: lag=%d", lag)

    def run(self) -> None:
        period = max(0.05, self.settings.watchdog_s / 4)
        while not self.stop.wait(period):
            self.tick()

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name="dreamstream-watchdog", daemon=True)
        self.thread.start()


def install(app: Any, worker: Any, settings: Settings) -> Watchdog | None:
    """Start the watchdog with the app (not at import: an in-process app must not exit its host early)."""
    _maybe_hang(worker)
    if settings.watchdog_s <= 0:
        return None
    dog = Watchdog(app, worker, settings)

    @app.task
    async def start_watchdog() -> None:
        dog.start()
        log.info("watchdog on: threshold=%ss action=%s", settings.watchdog_s, settings.watchdog_action)

    @app.timer(max(0.5, settings.watchdog_s / 4), name="watchdog-end-offsets")
    async def sample_ends() -> None:
        await dog.sample_ends()

    @app.on_before_shutdown.connect
    async def stop_watchdog(app: Any, **kwargs: Any) -> None:
        dog.stop.set()

    return dog


def _maybe_hang(worker: Any) -> None:
    """Test-only (``DSTEST_HANG_AFTER_BATCHES=N``): the N+1-th batch awaits forever, as a wedged consumer does."""
    after = os.environ.get(HANG_HOOK)
    if not after:
        return
    import asyncio

    process, seen = worker.process, [0]

    async def hanging(batch: Any) -> None:
        seen[0] += 1
        if seen[0] > int(after):
            log.warning("test hook %s: processing hangs now", HANG_HOOK)
            await asyncio.Event().wait()
        await process(batch)

    worker.process = hanging
