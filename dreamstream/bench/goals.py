"""The stream worker's performance goals, and one `bench` run's verdict on each.

Why the bench ends with them: a run prints a page of rates, latencies and
CPU shares, and the question a person has is whether the worker meets its
goals on their box. The goals are the project's (README, "Performance
goals"): at least 10,000 events/s on a 2-core machine with the broker on
it, at least 10x a plain per-event Faust agent, the ONNX steps at most
5 µs an event at the worker's batch size, and p99 event-to-embedding
latency under 100 ms at half the maximum rate and under 50 ms at a tenth
of it (over all events of three 15 s runs). The goals' maximum is the
live one, the highest paced rate the worker sustains, latency flat over
the run (its maximum sustainable throughput; ``dreamstream.bench.live_max``;
README, Performance goals). The preloaded one, a backlog drained in large
batches, is a catch-up burst: its half is judged against the half-live
threshold too, as a harder point, and a run without ``--live-max`` says
the goals' own points were not measured rather than stay silent about them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

MIN_EVENTS_PER_S = 10_000
MIN_RATIO = 10.0
MAX_ONNX_US = 5.0
HALF_PRELOADED = "half the preloaded max"
HALF_LIVE = "half the live max"
TENTH_LIVE = "10% of the live max"
MAX_P99_MS = {HALF_LIVE: 100.0, TENTH_LIVE: 50.0, HALF_PRELOADED: 100.0}  # p99 under this at each point


@dataclass
class LatencyAt:
    """p99 over all runs' events at one rate, and what the rate is half of."""

    rate: float
    p99_ms: float
    label: str  # a key of MAX_P99_MS, or any other name of the point (not judged)
    p50_ms: float = float("nan")
    run_p99s: list[float] = field(default_factory=list)  # each run's own p99 (ms)


@dataclass
class BenchResults:
    """What one `bench` run measured; None where it was not measured."""

    events_per_s: float
    plain_events_per_s: float | None = None
    onnx_us: float | None = None
    batch_size: int = 0
    latencies: list[LatencyAt] = field(default_factory=list)
    live_max: float | None = None  # None: not searched (no --live-max); 0.0: searched, no rate was sustained


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
        if lat.label not in MAX_P99_MS:
            continue
        limit = MAX_P99_MS[lat.label]
        out.append(Verdict(f"p99 < {limit:.0f} ms at {lat.label}", f"{lat.p99_ms:,.0f} ms at {lat.rate:,.0f} events/s",
                           lat.p99_ms < limit))
    if r.latencies:
        why = "not measured (add --live-max)" if r.live_max is None else "not measured (no sustained rate found)"
        out += [Verdict(f"p99 < {MAX_P99_MS[label]:.0f} ms at {label}", why, None)
                for label in (HALF_LIVE, TENTH_LIVE) if all(lat.label != label for lat in r.latencies)]
    return out


def render(items: list[Verdict]) -> str:
    """The verdicts as an aligned block, one goal a line."""
    width = max(len(v.goal) for v in items)
    mwidth = max(len(v.measured) for v in items)
    status = {True: "met", False: "NOT met", None: "-"}
    lines = ["goals (README, Performance goals):"]
    lines += [f"  {v.goal:<{width}}  {v.measured:<{mwidth}}  {status[v.met]}" for v in items]
    return "\n".join(lines)
