"""The live-maximum search: a rate is sustained when latency does not grow over the run (slope and thirds' p99)."""
from __future__ import annotations

import numpy as np

from dreamstream.bench.live_max import (MAX_SLOPE, judge, latency_slope, p99_by_part, search_live_max, theil_sen,
                                        window_medians)


def load(rate: float, capacity: float, seconds: float = 12.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Due times and latencies of a worker that handles ``capacity`` events/s: past it, the backlog grows linearly."""
    rng = np.random.default_rng(seed)
    due = np.arange(0, seconds, 1 / rate)
    behind = max(0.0, (rate - capacity) / rate)  # seconds of latency added per second of load
    return due, 0.08 + behind * due + rng.exponential(0.03, len(due))  # plus noise around an 80 ms floor


def test_theil_sen_is_the_median_pairwise_slope_and_ignores_an_outlier() -> None:
    x = np.arange(10.0)
    y = 2 * x + 1
    assert theil_sen(x, y) == 2.0
    y[9] = 1000.0  # one wild point: least squares tilts, the median of pairwise slopes does not
    assert theil_sen(x, y) == 2.0 and np.polyfit(x, y, 1)[0] > 50
    assert theil_sen(np.array([1.0]), np.array([3.0])) == 0.0
    assert theil_sen(np.array([1.0, 1.0]), np.array([3.0, 4.0])) == 0.0  # no distinct x: no slope


def test_window_medians_take_each_windows_median() -> None:
    due = np.array([0.0, 0.1, 0.2, 0.3, 0.6, 0.7])
    lat = np.array([1.0, 3.0, 2.0, 10.0, 5.0, 7.0])
    t, med = window_medians(due, lat, window_s=0.25)
    assert list(med) == [2.0, 10.0, 6.0] and np.allclose(t, [0.125, 0.375, 0.625])


def test_a_flat_series_is_sustained_and_a_growing_one_is_not() -> None:
    due, latency = load(2000, capacity=5000)
    flat = judge(due, latency)
    assert flat.kept_up and abs(flat.slope) < MAX_SLOPE / 2
    rng = np.random.default_rng(1)
    growing = 0.05 + 0.002 * due + rng.exponential(0.01, len(due))  # +2 ms per second: 0.2% of the load falling behind
    v = judge(due, growing)
    assert not v.kept_up and abs(v.slope - 0.002) < 0.0005 and "latency grows +2.0 ms/s" in v.failed


def test_one_stall_does_not_make_a_trend_but_a_late_tail_fails_the_thirds() -> None:
    due, latency = load(2000, capacity=5000)
    stalled = latency.copy()
    stalled[(due > 11.0) & (due < 11.3)] += 0.4  # one 300 ms stall near the end (a GC pass, a neighbour's burst)
    assert np.polyfit(due[due > 4], stalled[due > 4], 1)[0] > MAX_SLOPE  # least squares would call it a trend
    assert abs(latency_slope(due, stalled)) < MAX_SLOPE
    late_tail = latency.copy()
    late_tail[(due > 8) & (np.arange(len(due)) % 20 == 0)] += 0.3  # every 20th event of the last third 300 ms late
    v = judge(due, late_tail)
    assert not v.kept_up and "last third's p99" in v.failed


def test_warm_up_in_the_first_third_is_not_a_trend() -> None:
    due, latency = load(2000, capacity=5000)
    warm = latency + np.where(due < 3, 0.2 * (3 - due), 0.0)  # slow first batches, falling to the floor in 3 s
    v = judge(due, warm)
    assert v.kept_up and abs(v.slope) < MAX_SLOPE


def test_bisection_finds_the_capacity_within_its_resolution() -> None:
    lines: list[str] = []
    live = search_live_max(lambda rate: load(rate, capacity=7000), high=20000, echo=lines.append)
    # 10,000 and 7,500 fall behind, 5,000 and 6,250 keep up
    assert live == 6250 and len(lines) == 4
    assert "fell behind" in lines[0] and "kept up" in lines[1] and "fell behind" in lines[2] and "kept up" in lines[3]
    assert "ms per second of load (Theil-Sen, last two thirds), p99 by third" in lines[0]


def test_a_run_still_draining_the_backlog_it_built_is_not_sustained() -> None:
    """Seen on 2026-12-07: a fresh worker built a 2.6 s backlog at the start and was still working it off at -73 ms/s."""
    due = np.arange(0, 15, 1 / 2000)
    rng = np.random.default_rng(2)
    draining = np.maximum(0.08, 2.6 - 0.07 * due) + rng.exponential(0.03, len(due))
    v = judge(due, draining)
    assert not v.kept_up and v.slope < -0.05 and "draining a backlog" in v.failed
    settling = 0.08 + np.where(due < 4, 0.05 * (4 - due), 0.0) + rng.exponential(0.03, len(due))  # warm-up done by 4 s
    assert judge(due, settling).kept_up


def test_a_slightly_overloaded_rate_is_caught() -> None:
    """1% over capacity adds 10 ms per second: the old least-squares 20 ms/s criterion let this through."""
    due, latency = load(7070, capacity=7000)
    v = judge(due, latency)
    assert not v.kept_up and 0.005 < v.slope < 0.015


def test_nothing_kept_up_reports_zero() -> None:
    assert search_live_max(lambda rate: load(rate, capacity=100), high=20000, echo=lambda _: None) == 0.0


def test_p99_by_part_shows_when_the_slow_events_came() -> None:
    due = np.arange(0, 9, 0.001)
    latency = np.where(due < 6, 0.1, 0.4)  # the last third slow, as on a broker that slows while the run goes
    first, middle, last = p99_by_part(due, latency)
    assert first == middle == 0.1 and last == 0.4
    assert len(p99_by_part(due, latency, parts=5)) == 5
    assert p99_by_part(np.array([]), np.array([])) == []
