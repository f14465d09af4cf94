"""The highest paced rate the worker keeps up with: its live maximum, next to the preloaded one.

Why a second maximum: `bench` times the worker on a preloaded backlog.
There a batch of 8,192 events holds few users with many events each
(a fetch returns one or two partitions' backlog), so one state gather, one
record and one row cover ~7 events. Live traffic arrives spread over every
partition, so a batch holds about one event per user, and the per-user
work (gather, record, row) is paid for nearly every event: 2-3x the cost
per event on this box. "Half the maximum" of the preloaded run can then
be more than the worker sustains live at all.

A rate is *sustained* when latency does not keep growing while the load
runs (the definition of Karimov et al., "Benchmarking Distributed Stream
Data Processing Systems", ICDE 2018): a worker that falls behind by a
fraction ``f`` of the rate adds ``f`` seconds of latency per second of
load, so the least-squares slope of latency over the load's time is the
test. The search bisects between 0 and the preloaded maximum.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

MAX_SLOPE = 0.02  # latency may grow at most 20 ms per second of load: the worker falls at most 2% behind (steady runs here: +13 ms/s)


def latency_slope(due_s: np.ndarray, latency_s: np.ndarray) -> float:
    """Growth of latency per second of load (seconds per second), by least squares."""
    if len(due_s) < 2 or np.ptp(due_s) == 0:
        return 0.0
    return float(np.polyfit(due_s - due_s[0], latency_s, 1)[0])


def p99_by_part(due_s: np.ndarray, latency_s: np.ndarray, parts: int = 3) -> list[float]:
    """p99 latency (s) of the events due in each equal part of the load's time, first to last.

    Why: one p99 over a whole run hides *when* the slow events came. On
    the embedded broker the last part is often the slowest even at rates
    the worker keeps up with: tansu lists every stored batch of a partition
    on each fetch, so the broker costs more CPU the longer a run goes (a
    paced producer and one reader alone took it from 12% to 56% of a core
    in 30 s at 28,000 messages/s), and on a shared box that CPU is the
    worker's. A real Kafka finds a fetch offset through its index.
    """
    if not len(due_s):
        return []
    edges = np.linspace(due_s.min(), due_s.max(), parts + 1)
    which = np.clip(np.searchsorted(edges, due_s, side="right") - 1, 0, parts - 1)
    return [float(np.percentile(latency_s[which == i], 99)) if (which == i).any() else float("nan") for i in range(parts)]


def search_live_max(run: Callable[[float], tuple[np.ndarray, np.ndarray]], high: float, steps: int = 4,
                    echo: Callable[[str], None] = print) -> float:
    """Bisect (0, ``high``] for the highest sustained rate; 0 when even ``high / 2**steps`` was not.

    ``run(rate)`` feeds a fresh worker at ``rate`` and returns each event's
    due time and latency, in seconds.
    """
    low = 0.0
    for _ in range(steps):
        rate = (low + high) / 2
        due, latency = run(rate)
        slope = latency_slope(due, latency)
        kept_up = slope <= MAX_SLOPE
        echo(f"  {rate:,.0f} events/s: latency grows {round(slope * 1000):+d} ms per second of load, "
             f"p99 {np.percentile(latency, 99) * 1000:.0f} ms -> {'kept up' if kept_up else 'fell behind'}")
        low, high = (rate, high) if kept_up else (low, rate)
    return low
