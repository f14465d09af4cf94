"""Where a latency run's worker spent its batches: per-stage p99s read off the worker's /metrics page.

Why from /metrics: the bench's own clocks see an event due, sent, its
record written and read, so they split a latency into the load generator,
the worker and the reader, but not *inside* the worker. The worker times
each stage of its batch loop per batch (``streams.ops.metrics.STAGES``:
fetch wait, decode, apply, send, flush wait, flush encode); the bench reads
the histograms once after the warm-up and once at the end, and the p99 of
the difference is the run's, estimated within a bucket as Prometheus'
``histogram_quantile`` does. Batch sizes come from the same page.
"""
from __future__ import annotations

import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from streams.ops.metrics import STAGES

STAGE_METRIC = "dreamstream_stage_seconds"
BATCH_METRIC = "dreamstream_batch_events"
Buckets = dict[float, float]  # upper bound -> cumulative count


@dataclass
class Snapshot:
    """Cumulative histogram buckets of one scrape: per stage, and of batch sizes."""

    stages: dict[str, Buckets] = field(default_factory=dict)
    batches: Buckets = field(default_factory=dict)

    def minus(self, before: "Snapshot") -> "Snapshot":
        """What was observed between ``before`` and this scrape."""
        def diff(now: Buckets, then: Buckets) -> Buckets:
            return {le: n - then.get(le, 0.0) for le, n in now.items()}
        return Snapshot({s: diff(b, before.stages.get(s, {})) for s, b in self.stages.items()},
                        diff(self.batches, before.batches))


def parse(text: str) -> Snapshot:
    """The stage and batch-size histograms of a Prometheus exposition."""
    snap = Snapshot()
    for family in text_string_to_metric_families(text):
        if family.name not in (STAGE_METRIC, BATCH_METRIC):
            continue
        for sample in family.samples:
            if not sample.name.endswith("_bucket"):
                continue
            le = float(sample.labels["le"])
            if family.name == STAGE_METRIC:
                snap.stages.setdefault(sample.labels["stage"], {})[le] = sample.value
            else:
                snap.batches[le] = sample.value
    return snap


def scrape(port: int, timeout_s: float = 5.0) -> Snapshot | None:
    """The worker's histograms now, or None when its page cannot be read (the report then leaves them out)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as resp:
            return parse(resp.read().decode())
    except OSError:
        return None


def quantile(q: float, buckets: Buckets) -> float | None:
    """The ``q`` quantile of a cumulative histogram, linear within its bucket (None when empty).

    As Prometheus' ``histogram_quantile``: past the last finite bound the
    answer is that bound.
    """
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = le, count
    return lower


def summary(snap: Snapshot, stages: tuple[str, ...] = STAGES) -> str:
    """One line: the p99 of each stage per batch (ms), and how many batches of what median size."""
    parts = []
    for stage in stages:
        p99 = quantile(0.99, snap.stages.get(stage, {}))
        if p99 is not None:
            parts.append(f"{stage.replace('_', ' ')} {1000 * p99:.1f}")
    batches = snap.batches.get(float("inf"), 0.0)
    median = quantile(0.5, snap.batches)
    size = f"; {batches:,.0f} batches, median ~{median:,.0f} messages" if median is not None else ""
    return f"worker stages p99 per batch (ms): {', '.join(parts) or 'none observed'}{size}"
