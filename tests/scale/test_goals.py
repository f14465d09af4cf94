"""The bench's closing verdicts: each goal judged from what the run measured, nothing judged that it did not."""
from __future__ import annotations

from dreamstream.bench.goals import HALF_LIVE, HALF_PRELOADED, TENTH_LIVE, BenchResults, LatencyAt, render, verdicts


def test_each_goal_is_judged_against_its_threshold() -> None:
    r = BenchResults(80_166, plain_events_per_s=2_918, onnx_us=4.46, batch_size=8192,
                     latencies=[LatencyAt(40_083, 1952.4, HALF_PRELOADED), LatencyAt(25_052, 82.2, HALF_LIVE),
                                LatencyAt(5_010, 51.0, TENTH_LIVE)])
    got = {v.goal: v for v in verdicts(r)}
    assert got[">= 10,000 events/s (preloaded)"].met
    assert got[">= 10x the plain per-event agent"].measured == "27.5x" and got[">= 10x the plain per-event agent"].met
    assert got["ONNX steps <= 5 us an event at batch 8192"].met
    assert got["p99 < 100 ms at half the preloaded max"].met is False
    assert got["p99 < 100 ms at half the live max"].met is True
    assert got["p99 < 100 ms at half the live max"].measured == "82 ms at 25,052 events/s"
    assert got["p99 < 50 ms at 10% of the live max"].met is False  # 51 ms is over
    assert not any("not measured" in v.measured for v in got.values())


def test_a_slow_run_fails_each_goal_and_what_was_not_measured_is_not_judged() -> None:
    slow = verdicts(BenchResults(9_000, plain_events_per_s=1_000, onnx_us=5.2, batch_size=512,
                                 latencies=[LatencyAt(4_500, 100.0, HALF_PRELOADED)]))
    assert [v.met for v in slow] == [False, False, False, False, None, None]  # 100 ms is not under 100 ms
    assert [(v.goal, v.measured) for v in slow[-2:]] == [("p99 < 100 ms at half the live max", "not measured (add --live-max)"),
                                                         ("p99 < 50 ms at 10% of the live max", "not measured (add --live-max)")]
    bare = verdicts(BenchResults(12_000))
    assert [(v.goal, v.met) for v in bare] == [(">= 10,000 events/s (preloaded)", True),
                                               (">= 10x the plain per-event agent", None)]
    text = render(bare)
    assert text.splitlines()[0].startswith("goals") and text.splitlines()[2].endswith("-")


def test_a_search_that_found_no_sustained_rate_says_so() -> None:
    got = verdicts(BenchResults(20_000, latencies=[LatencyAt(10_000, 900.0, HALF_PRELOADED)], live_max=0.0))
    assert [v.measured for v in got[-2:]] == ["not measured (no sustained rate found)"] * 2
