"""Latency against load: p50 and p99 at fixed shares of the live maximum, as a table and a PNG.

Why a curve and not one point: a p99 at half the maximum says whether a
goal is met, not how much headroom there is or where latency starts to
climb; 10%, 25%, 50% and 75% of the honest live maximum
(``dreamstream.bench.live_max``) show both, each point over all events of
its runs (each run on a fresh worker and broker), with every run's own p99
beside it so the spread between runs stays visible.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from dreamstream.bench.goals import MAX_P99_MS, LatencyAt

FRACTIONS = (0.10, 0.25, 0.50, 0.75)  # of the live maximum


def table(points: Sequence[LatencyAt], live: float) -> str:
    """One line a point: share of the live max, rate, p50 and p99 over all runs, each run's p99."""
    lines = [f"latency against load (live maximum ~{live:,.0f} events/s; all runs' events together):"]
    for at in points:
        runs = " / ".join(f"{p:.0f}" for p in at.run_p99s)
        lines.append(f"  {at.rate / live:>4.0%}  {at.rate:>8,.0f} events/s  p50 {at.p50_ms:6.1f} ms  p99 {at.p99_ms:7.1f} ms"
                     f"  (runs' p99 {runs} ms)")
    return "\n".join(lines)


def plot(points: Sequence[LatencyAt], live: float, path: str | Path, title: str = "") -> Path:
    """p50 and p99 (all runs) and each run's p99 against the rate, with the goals' thresholds marked."""
    from dreamstream.plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    rates = [at.rate for at in points]
    ax.plot(rates, [at.p99_ms for at in points], "o-", label="p99 (all runs' events)")
    ax.plot(rates, [at.p50_ms for at in points], "s-", label="p50")
    for at in points:
        ax.plot([at.rate] * len(at.run_p99s), at.run_p99s, "x", c="grey", ms=5)
    ax.plot([], [], "x", c="grey", label="p99 of each run")
    for label, limit in MAX_P99_MS.items():
        share = {"half the live max": 0.5, "10% of the live max": 0.1}.get(label)
        if share is not None:
            ax.plot([share * live], [limit], "v", c="red", ms=9)
            ax.annotate(f"goal: p99 < {limit:.0f} ms", (share * live, limit), textcoords="offset points", xytext=(4, 6),
                        fontsize=8, color="red")
    ax.set_xlabel(f"paced load, events/s (live maximum ~{live:,.0f})")
    ax.set_ylabel("event -> embedding latency (ms)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "dreamstream worker: latency against load", fontsize=10)
    return _save(fig, plt, path)
