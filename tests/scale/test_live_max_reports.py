"""`bench --live-max`'s sequence: bisect, then the curve at 10/25/50/75% of the live max, judged at 10% and 50%, plotted."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dreamstream.bench.goals import HALF_LIVE, HALF_PRELOADED, TENTH_LIVE, LatencyAt
from dreamstream.commands.bench import _latency_reports


class Paced:
    """Stands in for the paced runs: a worker of 6,000 events/s capacity whose p99 grows with the load."""

    def __init__(self) -> None:
        self.reported: list[tuple[float, str]] = []

    def measure(self, rate: float) -> tuple[np.ndarray, np.ndarray]:
        due = np.arange(0, 15, 1 / 200)
        return due, 0.02 + max(0.0, rate - 6000) / rate * due

    def report(self, rate: float, label: str, repeats: int) -> LatencyAt:
        self.reported.append((rate, label))
        return LatencyAt(rate, 10 + rate / 100, label, 5 + rate / 400, [10 + rate / 100] * repeats)


def test_the_curve_follows_the_live_max_and_only_the_goals_points_are_judged(tmp_path: Path, capsys) -> None:
    paced = Paced()
    png = tmp_path / "curve.png"
    judged = _latency_reports(paced, 20_000, (), 3, live_max=True, curve_png=png)
    text = capsys.readouterr().out
    live = 5_000  # 10,000 and 7,500 fall behind, 5,000 keeps up, 6,250 falls behind
    assert "live maximum: ~5,000 events/s" in text, text
    assert [r for r, _ in paced.reported] == [10_000, 0.1 * live, 0.25 * live, 0.5 * live, 0.75 * live]
    assert [label for _, label in paced.reported] == [HALF_PRELOADED, TENTH_LIVE, "25% of the live max", HALF_LIVE,
                                                      "75% of the live max"]
    assert "latency against load (live maximum ~5,000 events/s" in text and png.exists()
    assert len(judged) == 5  # half the preloaded max and the four points (goals.verdicts picks the judged ones)
