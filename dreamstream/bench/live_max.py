"""The highest paced rate the worker sustains: its live maximum, next to the preloaded one.

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
load. The test (:func:`judge`), both parts over the run's own events:

* the **slope** of latency over the load's time, Theil-Sen (the median of
  the pairwise slopes) over the per-window medians of the *last two
  thirds* of the run, at most :data:`MAX_SLOPE` (1 ms per second). The
  first third is left out because a fresh worker warms up in it (its first
  batches and flushes are slower), which tilts a fitted line down; the
  median of windows and Theil-Sen are used because one stall (a GC pass, a
  neighbour's burst on the shared cores) pulls a least-squares line over
  hundreds of thousands of points by tens of ms per second, and the
  criterion is for trends, not spikes;
* the slope at least -:data:`MAX_DRAIN` (-5 ms per second): latency still
  *falling* that fast after the first third means the run spent it
  draining a backlog it built at the start, not in a steady state, so it
  says nothing for the rate (found on 2026-12-07: a fresh worker at half
  the preloaded maximum built a 2.6 s backlog in its first seconds and was
  still working it off at -73 ms/s when the run ended; the old test called
  that "kept up");
* the **last third's p99** at most :data:`MAX_P99_GROWTH` times the first
  third's (or :data:`P99_SLACK_S` above it, whichever is more: 10 ms of
  jitter on a 15 ms p99 is not a trend): a backlog that builds late in the
  run shows in the tail before it moves the median.

How the thresholds were chosen (docs/measurements.md, "Honest live
maximum"): 1 ms/s is 0.1% of the rate falling behind, an order of magnitude
under every run the old criterion (least squares, at most 20 ms/s)
accepted while its backlog grew (+10 to +13 ms/s), and at the edge of
the slopes of runs far below the maximum (at 10-50% of it, 7 of 9 runs
on 2026-12-07 between -1.0 and +1.3 ms/s). On a box this shared a neighbour's burst
can still tilt a run by +-10 ms/s, which fails a sustainable rate: the
search then *under*states the maximum, the safe side for a latency
promise, and each rate's line says why it failed. The search bisects
between 0 and the preloaded maximum.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MAX_SLOPE = 0.001  # latency may grow at most 1 ms per second of load over the last two thirds (Theil-Sen)
MAX_DRAIN = 0.005  # ... and fall at most 5 ms per second (faster: a backlog being drained, not a steady state)
MAX_P99_GROWTH = 1.5  # the last third's p99 at most 1.5x the first third's ...
P99_SLACK_S = 0.020  # ... or 20 ms above it, whichever allows more
WINDOW_S = 0.25  # the slope is fitted to the median latency of each window of this length


def theil_sen(x: np.ndarray, y: np.ndarray) -> float:
    """The median of the slopes between every pair of points with distinct x (0.0 with fewer than two)."""
    if len(x) < 2:
        return 0.0
    i, j = np.triu_indices(len(x), k=1)
    dx = x[j] - x[i]
    keep = dx != 0
    return float(np.median((y[j] - y[i])[keep] / dx[keep])) if keep.any() else 0.0


def window_medians(due_s: np.ndarray, latency_s: np.ndarray, window_s: float = WINDOW_S) -> tuple[np.ndarray, np.ndarray]:
    """Each non-empty window's centre time and median latency, windows of ``window_s`` from the first due time."""
    if not len(due_s):
        return np.array([]), np.array([])
    which = np.floor((due_s - due_s.min()) / window_s).astype(int)
    order = np.argsort(which, kind="stable")
    which, lat = which[order], latency_s[order]
    starts = np.flatnonzero(np.r_[True, which[1:] != which[:-1]])
    medians = np.array([np.median(part) for part in np.split(lat, starts[1:])])
    return due_s.min() + (which[starts] + 0.5) * window_s, medians


def latency_slope(due_s: np.ndarray, latency_s: np.ndarray, skip: float = 1 / 3) -> float:
    """Growth of latency per second of load (s/s): Theil-Sen over the window medians after the first ``skip`` of the run."""
    if len(due_s) < 2 or np.ptp(due_s) == 0:
        return 0.0
    start = due_s.min() + skip * np.ptp(due_s)
    late = due_s >= start
    t, med = window_medians(due_s[late], latency_s[late])
    return theil_sen(t, med)


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


@dataclass(frozen=True)
class Sustained:
    """One run's verdict: the slope and the thirds' p99s it was judged on, and why it failed (None: sustained)."""

    slope: float  # s per s, Theil-Sen over the last two thirds
    thirds_p99: tuple[float, ...]  # s
    failed: str | None

    @property
    def kept_up(self) -> bool:
        return self.failed is None


def judge(due_s: np.ndarray, latency_s: np.ndarray) -> Sustained:
    """Was the run's rate sustained: latency flat over its last two thirds (neither growing nor draining), and its last
    third's p99 near its first's?"""
    slope = latency_slope(due_s, latency_s)
    thirds = tuple(p99_by_part(due_s, latency_s))
    reasons = []
    if slope > MAX_SLOPE:
        reasons.append(f"latency grows {1000 * slope:+.1f} ms/s > {1000 * MAX_SLOPE:.0f}")
    if slope < -MAX_DRAIN:
        reasons.append(f"latency still falls {1000 * slope:+.1f} ms/s < -{1000 * MAX_DRAIN:.0f}: draining a backlog the run built, "
                       "not a steady state")
    if len(thirds) == 3 and thirds[2] > max(MAX_P99_GROWTH * thirds[0], thirds[0] + P99_SLACK_S):
        reasons.append(f"last third's p99 {1000 * thirds[2]:.0f} ms > {MAX_P99_GROWTH}x the first's {1000 * thirds[0]:.0f} ms")
    return Sustained(slope, thirds, "; ".join(reasons) or None)


def search_live_max(run: Callable[[float], tuple[np.ndarray, np.ndarray]], high: float, steps: int = 4,
                    echo: Callable[[str], None] = print) -> float:
    """Bisect (0, ``high``] for the highest sustained rate; 0 when even ``high / 2**steps`` was not.

    ``run(rate)`` feeds a fresh worker at ``rate`` and returns each event's
    due time and latency, in seconds. Each rate's line gives the slope and
    the thirds' p99s it was judged on.
    """
    low = 0.0
    for _ in range(steps):
        rate = (low + high) / 2
        due, latency = run(rate)
        v = judge(due, latency)
        thirds = " / ".join(f"{1000 * p:.0f}" for p in v.thirds_p99)
        echo(f"  {rate:,.0f} events/s: latency grows {1000 * v.slope:+.1f} ms per second of load (Theil-Sen, last two "
             f"thirds), p99 by third {thirds} ms, p99 {np.percentile(latency, 99) * 1000:.0f} ms -> "
             f"{'kept up' if v.kept_up else 'fell behind (' + v.failed + ')'}")
        low, high = (rate, high) if v.kept_up else (low, rate)
    return low
