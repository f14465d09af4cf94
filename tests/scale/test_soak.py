"""`bench --soak`: a short real soak (worker process, paced load, reader) and the arithmetic of its report."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dreamstream.bench import soak
from scale_support import setup_stack


def test_rss_slope_ignores_the_warm_up_half():
    warm_up = [(float(t), 100.0 + 5 * t) for t in range(10)]  # steep while caches fill
    level = [(float(t), 150.0 + 0.001 * (t - 10)) for t in range(10, 20)]
    assert abs(soak.rss_slope_mb_per_hour(warm_up + level) - 3.6) < 1e-6  # 0.001 MB/s = 3.6 MB/h


def test_windows_count_latency_and_memory_per_window():
    tracker = soak._Tracker()
    for i in range(10):  # one user, one event per second, each applied 0.1 s after its send
        tracker.on_send("u", 100.0 + i)
        tracker.on_record("u", i + 1, 100.1 + i)
    rss = [(100.0 + i, 50.0 + i) for i in range(10)]
    ws = soak._windows(tracker, rss, t0=100.0, end=110.0, width=5.0, broker_rss=[(101.0, 300.0)])
    assert [w.t for w in ws] == [5.0, 10.0]
    assert [w.events_out for w in ws] == [1.0, 1.0]  # 5 events per 5-s window
    assert all(abs(w.p99_ms - 100.0) < 1e-6 for w in ws)
    assert ws[0].rss_mb == np.mean([50.0 + i for i in range(1, 6)]) and ws[0].broker_rss_mb == 300.0
    assert ws[1].broker_rss_mb is None


@pytest.mark.slow
def test_a_short_soak_applies_every_event_and_writes_its_report(make_settings, bundle_dir, broker, tmp_path):
    s, items = setup_stack(make_settings, bundle_dir)
    report = soak.run(s, minutes=0.25, rate=100, users=50, items=list(items), work=tmp_path,
                      progress=print, window_s=5.0, broker_pid=broker.pid)
    assert report.sent >= 0.25 * 60 * 100 * 0.95
    assert report.applied == report.sent, "every event sent must come back as a record covering it"
    assert report.p99_ms < 10_000 and report.rss_end_mb > 0
    assert any(w.broker_rss_mb for w in report.windows), "the embedded broker's memory was not sampled"
    png = soak.plot(report, tmp_path / "soak.png")
    assert png.stat().st_size > 10_000
    assert json.loads(report.to_json())["applied"] == report.applied
