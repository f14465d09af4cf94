"""The stall watchdog: pure logic on a fake clock, the tick against fake consumer state, one real hung worker."""
from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest

from dreamstream.bench import harness as h
from dreamstream.settings import Settings
from streams.ops.metrics import WorkerMetrics
from streams.ops.watchdog import EXIT_STALLED, HANG_HOOK, StallDetector, Watchdog

from dreamstream.broker import free_port
from e2e_support import metric_of, wait_until
from scale_support import setup_stack


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_lag_without_progress_for_the_threshold_is_a_stall():
    clock = Clock()
    d = StallDetector(10.0, clock)
    assert not d.observe(lag=5, progress=1)
    clock.t += 9.9
    assert not d.observe(lag=50, progress=1)
    clock.t += 0.2
    assert d.observe(lag=80, progress=1) and d.stalls == 1 and d.lag_at_start == 5
    clock.t += 30
    assert d.observe(lag=90, progress=1) and d.stalls == 1  # one stall, counted once
    assert not d.observe(lag=90, progress=2)  # any progress ends it
    assert not d.stalled


@pytest.mark.parametrize("case", ["idle", "progress", "busy"])
def test_idle_progressing_or_rebalancing_workers_are_never_stalled(case):
    clock = Clock()
    d = StallDetector(5.0, clock)
    for i in range(100):
        clock.t += 1
        lag = 0 if case == "idle" else 100
        progress = i if case == "progress" else 7
        assert not d.observe(lag, progress, busy=case == "busy")


def test_a_busy_period_restarts_the_clock():
    clock = Clock()
    d = StallDetector(5.0, clock)
    d.observe(10, 1)
    clock.t += 4
    d.observe(10, 1, busy=True)  # a rebalance: the wait so far does not count
    clock.t += 4
    assert not d.observe(10, 1)
    clock.t += 1.5
    assert d.observe(10, 1)


def fake_worker(lag_by_partition: dict[int, tuple[int, int]]):
    """An app/worker pair exposing exactly what the watchdog reads: owned partitions, highwater, committed, metrics."""
    feed = SimpleNamespace(
        owned=set(lag_by_partition),
        highwater=lambda p: lag_by_partition[p][0],
        committed={p: c for p, (_, c) in lag_by_partition.items()},
    )
    app = SimpleNamespace(rebalancing=False, in_recovery=False)
    ready = asyncio.Event()
    ready.set()
    worker = SimpleNamespace(watch_topic="w", feed=feed, metrics=WorkerMetrics(), items=SimpleNamespace(ready=ready))
    return app, worker


def test_tick_sets_the_gauge_counts_the_stall_and_exits_non_zero(monkeypatch):
    clock = Clock()
    app, worker = fake_worker({0: (100, 40), 1: (10, 10)})
    exits: list[int] = []
    dog = Watchdog(app, worker, Settings(watchdog_s=3.0, watchdog_action="exit"), exit=exits.append)
    dog.detector.clock = clock
    assert dog.progress() == (60, 50)
    dog.tick()
    clock.t += 3.5
    dog.tick()
    assert exits == [EXIT_STALLED]
    reg = worker.metrics.registry
    assert reg.get_sample_value("dreamstream_stalled") == 1 and reg.get_sample_value("dreamstream_stalls_total") == 1
    worker.metrics.batch_size.observe(5)  # a batch was applied but nothing committed: still stalled
    dog.tick()
    assert reg.get_sample_value("dreamstream_stalled") == 1
    worker.metrics.commits.inc()  # a commit got through: recovered
    dog.tick()
    assert reg.get_sample_value("dreamstream_stalled") == 0 and exits == [EXIT_STALLED]


def test_log_action_only_reports(caplog):
    clock = Clock()
    app, worker = fake_worker({0: (100, 40)})
    exits: list[int] = []
    dog = Watchdog(app, worker, Settings(watchdog_s=1.0, watchdog_action="log"), exit=exits.append)
    dog.detector.clock = clock
    dog.tick()
    clock.t += 2
    dog.tick()
    assert exits == [] and "consumer stalled: lag=60" in caplog.text


@pytest.mark.slow
def test_a_hung_worker_exits_non_zero(make_settings, bundle_dir, tmp_path, monkeypatch):
    s, items = setup_stack(make_settings, bundle_dir, partitions=2, watchdog_s=3.0, watchdog_action="exit",
                           web_port=free_port())
    events = h.synthetic_events(2000, 100, list(items), seed=13)
    monkeypatch.setenv(HANG_HOOK, "3")
    w = h.WorkerProcess(s, tmp_path / "hung.log").start()
    feeder = threading.Thread(target=h.produce_sync, args=(s, s.topic("watch-events"), h.event_messages(events)),
                              kwargs={"rate": 200})
    feeder.start()
    try:
        # the hook lets 3 batches through, then the 4th hangs: the batch count reaching 3 is the hang's start
        wait_until(lambda: metric_of(s.web_port, "dreamstream_batch_events_count") == 3.0 or not w.alive(), 60,
                   "the worker to process its 3 batches before the hook hangs it", interval_s=0.05,
                   detail=lambda: w.log_text()[-3000:])
        hung_at = time.monotonic()
        w.proc.wait(30)
        took = time.monotonic() - hung_at
        assert w.proc.returncode == EXIT_STALLED, w.log_text()[-3000:]  # the watchdog's exit: a stall, nothing else
        assert took < 3.0 + 10, took
    finally:
        feeder.join()
        w.stop()


def test_a_partition_never_fetched_again_counts_by_its_end_offset():
    """The stall reproduced in test_rebalance: no fresh fetch high watermark, only the broker's end offset."""
    clock = Clock()
    app, worker = fake_worker({0: (100, 40), 3: (0, 20)})
    worker.feed.highwater = lambda p: None if p == 3 else 100
    exits: list[int] = []
    dog = Watchdog(app, worker, Settings(watchdog_s=2.0), exit=exits.append)
    dog.detector.clock = clock
    assert dog.progress()[0] == 60
    dog.ends = {3: 133}
    assert dog.progress()[0] == 60 + 113
    dog.tick()
    clock.t += 2.5
    dog.tick()
    assert exits == [EXIT_STALLED]
