"""The stream worker's performance goals, and one `bench` run's verdict on each.

Why the bench ends with them: a run prints a page of rates, latencies and
CPU shares, and the question a person has is whether the worker meets its
goals on their box. The goals are the project's (README, "Performance
goals"): at least 10,000 events/s on a 2-core machine with the broker on
it, at least 10x a plain per-event Faust agent, the ONNX steps at most
5 µs an event at the worker's batch size, and p99 event-to-embedding
latency under 200 ms at half the maximum rate. The goal's maximum is the
live one, the highest paced rate the worker keeps up with (its maximum
sustainable throughput; README, Performance goals). The preloaded one, a
backlog drained in large batches, is a catch-up burst: its half is judged
too, as a harder point, and a run without ``--live-max`` says the goal's
own point was not measured rather than stay silent about it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

MIN_EVENTS_PER_S = 10_000
MIN_RATIO = 10.0
MAX_ONNX_US = 5.0
MAX_P99_MS = 200.0
HALF_PRELOADED = "half the preloaded max"
HALF_LIVE = "half the live max"


@dataclass
class LatencyAt:
    """p99 over all runs' events at one rate, and what the rate is half of."""

    rate: float
    p99_ms: float
    label: str  # HALF_PRELOADED or HALF_LIVE


@dataclass
class BenchResults:
    """What one `bench` run measured; None where it was not measured."""

    events_per_s: float
    plain_events_per_s: float | None = None
    onnx_us: float | None = None
    batch_size: int = 0
    latencies: list[LatencyAt] = field(default_factory=list)


@dataclass(frozen=True)
class Verdict:
    goal: str
    measured: str
    met: bool | None  # None: not measured in this run


def verdicts(r: BenchResults) -> list[Verdict]:
    """One verdict per goal, in the README's order; the latency goal once per maximum measured."""
    out = [Verdict(f">= {MIN_EVENTS_PER_S:,} events/s (preloaded)", f"{r.events_per_s:,.0f} events/s",
                   r.events_per_s >= MIN_EVENTS_PER_S)]
    if r.plain_events_per_s:
        ratio = r.events_per_s / r.plain_events_per_s
        out.append(Verdict(f">= {MIN_RATIO:.0f}x the plain per-event agent", f"{ratio:.1f}x", ratio >= MIN_RATIO))
    else:
        out.append(Verdict(f">= {MIN_RATIO:.0f}x the plain per-event agent", "not measured", None))
    if r.onnx_us is not None:
        out.append(Verdict(f"ONNX steps <= {MAX_ONNX_US:.0f} us an event at batch {r.batch_size}", f"{r.onnx_us:.2f} us",
                           r.onnx_us <= MAX_ONNX_US))
    for lat in r.latencies:
        out.append(Verdict(f"p99 < {MAX_P99_MS:.0f} ms at {lat.label}", f"{lat.p99_ms:,.0f} ms at {lat.rate:,.0f} events/s",
                           lat.p99_ms < MAX_P99_MS))
    if r.latencies and all(lat.label != HALF_LIVE for lat in r.latencies):
        out.append(Verdict(f"p99 < {MAX_P99_MS:.0f} ms at {HALF_LIVE}", "not measured (add --live-max)", None))
    return out


def render(items: list[Verdict]) -> str:
    """The verdicts as an aligned block, one goal a line."""
    width = max(len(v.goal) for v in items)
    mwidth = max(len(v.measured) for v in items)
    status = {True: "met", False: "NOT met", None: "-"}
    lines = ["goals (README, Performance goals):"]
    lines += [f"  {v.goal:<{width}}  {v.measured:<{mwidth}}  {status[v.met]}" for v in items]
    return "\n".join(lines)
