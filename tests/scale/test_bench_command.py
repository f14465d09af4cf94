"""`dreamstream bench` end to end on a private broker: both agents finish, every line of the report is there."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from e2e_support import install


@pytest.mark.slow
def test_bench_reports_rates_ratio_onnx_cost_and_latency(bundle_dir: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    install(bundle_dir, models)
    run = subprocess.run(
        [str(Path(sys.executable).parent / "dreamstream"), "bench", "--events", "2000", "--users", "100",
         "--latency-rate", "400", "--latency-repeats", "2", "--latency-seconds", "6", "--model-dir", str(models)],
        capture_output=True, text=True, timeout=600,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "2000 events over 100 users; 4 partitions;" in out, out  # the default count, said with the run's setup
    worker = float(re.search(r"worker: ([\d,]+) events/s", out).group(1).replace(",", ""))
    plain = float(re.search(r"plain per-event agent: ([\d,]+) events/s", out).group(1).replace(",", ""))
    assert worker > 0 and plain > 0
    assert re.search(r"ratio worker / plain: [\d.]+x", out), out
    assert re.search(r"ONNX steps .* per event: [\d.]+ us at batch 1, [\d.]+ us at batch \d+ \(median round; best round "
                     r"[\d.]+ us; the box was \d+% busy meanwhile on \d+ cores\)", out), out
    assert re.search(r"latency at 400 events/s \(paced; 2 runs of 6 s", out), out
    runs = [float(p) for p in re.findall(r"run \d: \d+ events, p50 [\d.]+ ms, p99 ([\d.]+) ms, max [\d.]+ ms; p99 by third of "
                                          r"the run \d+ / \d+ / \d+ ms; latency grows [+-][\d.]+ ms per second of load \(Theil-Sen", out)]
    assert len(runs) == 2 and all(0 < p99 < 60_000 for p99 in runs), out
    splits = re.findall(r"due -> sent p50 (-?\d+) ms, p99 (-?\d+) ms; sent -> record written p50 (-?\d+) ms, p99 (-?\d+) ms; "
                        r"written -> read p50 (-?\d+) ms, p99 (-?\d+) ms", out)
    assert len(splits) == 3, out  # each run, and all runs together
    for (s50, s99, w50, w99, r50, r99), total99 in zip(splits, runs):
        assert 0 <= int(s50) and int(s99) <= total99 + 1, out  # the generator sends at or after the due time
        assert int(w50) >= -1 and int(r50) >= -1, out  # sent before written before read, on one clock (ms timestamps)
    pooled = float(re.search(r"all 2 runs' events together: p50 [\d.]+ ms, p99 ([\d.]+) ms", out).group(1))
    assert min(runs) * 0.99 <= pooled <= max(runs) * 1.01, out  # a mixture's p99 lies between its parts' p99s
    assert re.search(r"goals \(README, Performance goals\):\n  >= 10,000 events/s \(preloaded\) +[\d,]+ events/s +(met|NOT met)\n"
                     r"  >= 10x the plain per-event agent +[\d.]+x +(met|NOT met)\n  ONNX steps <= 5 us an event at batch \d+ "
                     r"+[\d.]+ us +(met|NOT met)", out), out
    assert "p99 < 100 ms" not in out and "p99 < 50 ms" not in out  # latency ran at a chosen rate, not at half a maximum: no latency goal to judge
    shares = re.search(r"CPU while it ran: worker (\d+)%, broker (\d+)%, reader (\d+)%, load generator (\d+)% of one core", out)
    assert shares and int(shares.group(1)) > 0, out  # the worker did work while the paced load ran
