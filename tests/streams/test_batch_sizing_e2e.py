"""A real worker sizes batches by its lag: a preloaded backlog in large batches, a trickle in small ones.

Judged by the worker's own batch-size histogram (``dreamstream_batch_events``)
on its /metrics page, read after the backlog and again after the trickle,
and by every user's last record carrying the seq of its last event.
"""
from __future__ import annotations

import pytest

from dreamstream.bench import harness as h
from dreamstream.broker import free_port
from e2e_support import counts, metrics_page, metrics_when, ready_stack, samples

pytestmark = pytest.mark.slow


def batch_buckets(body: str | None) -> dict[float, float]:
    """The worker's batch-size histogram: upper bound -> batches of at most that many messages so far."""
    return {float(dict(labels)["le"]): n for labels, n in samples(body, "dreamstream_batch_events_bucket").items()}


def test_backlog_in_large_batches_then_a_trickle_in_small_ones(make_settings, tmp_path, bundle_dir) -> None:
    s = make_settings(partitions=4, web_port=free_port(), cold_min_positive=0, batch_size=8192, batch_min=64,
                      store="memory://")
    items = ready_stack(s, bundle_dir)
    backlog = h.synthetic_events(8000, 800, list(items), seed=5)
    trickle = h.synthetic_events(150, 800, list(items), seed=6, start_ms=backlog[-1]["ts"] + 1)
    h.produce_sync(s, s.topic("watch-events"), h.event_messages(backlog))
    w = h.WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        h.read_records(s, counts(backlog), timeout_s=120)
        after_backlog = batch_buckets(metrics_when(s, "dreamstream_events_total 8000.0"))
        assert after_backlog[1024.0] < after_backlog[float("inf")], after_backlog  # behind: batches past 1,024 messages
        h.produce_sync(s, s.topic("watch-events"), h.event_messages(trickle), rate=50)  # 3 s at 50 events/s
        col = h.read_records(s, counts(backlog + trickle), timeout_s=60)
        want = counts(backlog + trickle)
        assert {u: col.latest[u]["seq"] for u in want} == want  # every event applied once (values: test_worker_e2e)
        body = metrics_when(s, "dreamstream_events_total 8150.0")
        after_trickle = batch_buckets(body)
        trickle_batches = after_trickle[float("inf")] - after_backlog[float("inf")]
        small = after_trickle[128.0] - after_backlog[128.0]
        assert trickle_batches >= 10 and small == trickle_batches, (after_backlog, after_trickle)  # caught up: small
        assert 'dreamstream_stage_seconds_count{stage="apply"}' in body and 'stage="fetch_wait"' in body, body
        assert w.stop() == 0, w.log_text()[-3000:]
    finally:
        w.stop()
        assert metrics_page(s.web_port) is None  # the worker is gone
