"""Per-stage p99s read off a worker's /metrics: the run's share (a difference of two scrapes), interpolated in a bucket."""
from __future__ import annotations

from streams.ops.metrics import STAGES, WorkerMetrics

from dreamstream.bench.worker_stages import parse, quantile, summary


def test_quantile_interpolates_within_the_bucket_as_prometheus_does() -> None:
    buckets = {0.01: 50.0, 0.02: 90.0, 0.04: 100.0, float("inf"): 100.0}
    assert quantile(0.5, buckets) == 0.01
    assert abs(quantile(0.7, buckets) - 0.015) < 1e-12  # 20 of the 40 in (0.01, 0.02]
    assert abs(quantile(0.99, buckets) - 0.038) < 1e-12
    assert quantile(0.99, {0.01: 0.0, float("inf"): 0.0}) is None
    assert quantile(0.99, {0.01: 1.0, float("inf"): 100.0}) == 0.01  # past the last bound: that bound


def test_the_runs_share_is_what_was_observed_between_two_scrapes() -> None:
    m = WorkerMetrics()
    for _ in range(100):  # the warm-up: slow applies that must not count
        m.stage_seconds.labels(stage="apply").observe(0.5)
    before = parse(m.exposition().decode())
    for i in range(100):
        m.stage_seconds.labels(stage="apply").observe(0.004)
        m.stage_seconds.labels(stage="fetch_wait").observe(0.001 if i < 98 else 0.2)
        m.batch_size.observe(20)
    run = parse(m.exposition().decode()).minus(before)
    assert quantile(0.99, run.stages["apply"]) < 0.006  # the warm-up's 500 ms left out
    assert quantile(0.99, run.stages["fetch_wait"]) > 0.1  # two slow fetch waits in 100 batches: the p99 shows them
    line = summary(run, STAGES)
    assert line.startswith("worker stages p99 per batch (ms): fetch wait ") and "apply " in line
    assert "100 batches, median ~" in line
    assert "send" not in line  # a stage never observed is left out, not reported as 0
