"""The latency-against-load curve: a line per share of the live maximum, and a PNG of it."""
from __future__ import annotations

from pathlib import Path

from dreamstream.bench.goals import HALF_LIVE, TENTH_LIVE, BenchResults, LatencyAt, verdicts
from dreamstream.bench.latency_curve import FRACTIONS, plot, table


def curve(live: float) -> list[LatencyAt]:
    labels = {0.10: TENTH_LIVE, 0.50: HALF_LIVE}
    return [LatencyAt(f * live, 20 + 200 * f * f, labels.get(f, f"{f:.0%} of the live max"), 10 + 50 * f,
                      [18 + 200 * f * f, 22 + 200 * f * f, 21 + 200 * f * f]) for f in FRACTIONS]


def test_table_has_a_line_per_share_with_every_runs_p99() -> None:
    lines = table(curve(20_000), 20_000).splitlines()
    assert lines[0].startswith("latency against load (live maximum ~20,000 events/s")
    assert len(lines) == 1 + len(FRACTIONS)
    assert lines[1].split()[:3] == ["10%", "2,000", "events/s"] and "(runs' p99 20 / 24 / 23 ms)" in lines[1]
    assert lines[4].split()[0] == "75%"


def test_plot_writes_a_png(tmp_path: Path) -> None:
    path = plot(curve(20_000), 20_000, tmp_path / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_only_the_goals_points_are_judged() -> None:
    got = verdicts(BenchResults(50_000, latencies=curve(20_000)))
    judged = [v.goal for v in got if v.goal.startswith("p99")]
    assert judged == ["p99 < 50 ms at 10% of the live max", "p99 < 100 ms at half the live max"]
