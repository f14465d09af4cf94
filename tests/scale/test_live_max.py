"""The live-maximum search: a rate is kept up with when latency does not keep growing while the load runs."""
from __future__ import annotations

import numpy as np

from dreamstream.bench.live_max import MAX_SLOPE, latency_slope, p99_by_part, search_live_max


def load(rate: float, capacity: float, seconds: float = 12.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Due times and latencies of a worker that handles ``capacity`` events/s: past it, the backlog grows linearly."""
    rng = np.random.default_rng(seed)
    due = np.arange(0, seconds, 1 / rate)
    behind = max(0.0, (rate - capacity) / rate)  # seconds of latency added per second of load
    return due, 0.08 + behind * due + rng.exponential(0.03, len(due))  # plus noise around an 80 ms floor


def test_slope_is_the_growth_of_latency_per_second_of_load() -> None:
    due, latency = load(1000, capacity=800)
    assert abs(latency_slope(due, latency) - 0.2) < 0.01 and latency_slope(due, latency) > MAX_SLOPE  # fell behind
    due, latency = load(1000, capacity=5000)
    assert abs(latency_slope(due, latency)) < 0.01 and latency_slope(due, latency) <= MAX_SLOPE  # kept up
    assert latency_slope(np.array([1.0]), np.array([0.5])) == 0.0  # one event: no trend to measure


def test_bisection_finds_the_capacity_within_its_resolution() -> None:
    lines: list[str] = []
    live = search_live_max(lambda rate: load(rate, capacity=7000), high=20000, echo=lines.append)
    # 10,000 and 7,500 fall behind (the latter by 6.7%, more than MAX_SLOPE), 5,000 and 6,250 keep up
    assert live == 6250 and len(lines) == 4
    assert "fell behind" in lines[0] and "kept up" in lines[1] and "fell behind" in lines[2] and "kept up" in lines[3]
    assert 7000 / 7500 < 1 - MAX_SLOPE  # why 7,500 counts as falling behind


def test_nothing_kept_up_reports_zero() -> None:
    assert search_live_max(lambda rate: load(rate, capacity=100), high=20000, echo=lambda _: None) == 0.0


def test_p99_by_part_shows_when_the_slow_events_came() -> None:
    due = np.arange(0, 9, 0.001)
    latency = np.where(due < 6, 0.1, 0.4)  # the last third slow, as on a broker that slows while the run goes
    first, middle, last = p99_by_part(due, latency)
    assert first == middle == 0.1 and last == 0.4
    assert len(p99_by_part(due, latency, parts=5)) == 5
    assert p99_by_part(np.array([]), np.array([])) == []
