"""`dreamstream bench-scale` end to end at a tiny size: a real worker and broker, the table, the JSON and the plot."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dreamstream.bench.scale import ScalePoint, extrapolate, zipf_ranks
from e2e_support import install


def test_zipf_ranks_follow_one_over_rank() -> None:
    ranks = zipf_ranks(np.random.default_rng(0), 200_000, 1_000, 1.0)
    counts = np.bincount(ranks, minlength=1_000)
    assert ranks.min() >= 0 and ranks.max() < 1_000
    h = (1.0 / np.arange(1, 1_001)).sum()
    assert abs(counts[0] / 200_000 - 1 / h) < 0.01  # the top video: 1/H(1000) = 13.4% of the watches
    assert abs(counts[0] / counts[9] - 10) < 1.5  # rank 1 against rank 10: ten times the watches


def test_extrapolation_scales_memory_and_keeps_its_label() -> None:
    ref = ScalePoint(1_000_000, 100_000, worker_base_mb=130.0, bytes_per_video=100.0, bytes_per_user=50.0,
                     cold_start_s=4.0, events_per_s=20_000.0)
    p = extrapolate([ref], 10_000_000, 1_000_000, "not run: too big")
    assert p.extrapolated and p.notes == ["not run: too big"]
    assert p.worker_items_mb == pytest.approx(130.0 + 1e9 / 2**20)
    assert p.worker_users_mb == pytest.approx(p.worker_items_mb + 5e7 / 2**20)
    assert p.cold_start_s == pytest.approx(40.0)


@pytest.mark.slow
def test_bench_scale_writes_table_json_and_plot(bundle_dir: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    install(bundle_dir, models)
    out_dir = tmp_path / "out"
    run = subprocess.run(
        [str(Path(sys.executable).parent / "dreamstream"), "bench-scale", "--size", "2k:500", "--latency-seconds", "2",
         "--model-dir", str(models), "--out", str(out_dir)],
        capture_output=True, text=True, timeout=300,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "published 2,000 / 2,000 videos" in out, out  # progress of the long phase
    [point] = json.loads((out_dir / "scale.json").read_text())
    assert (point["videos"], point["users"], point["extrapolated"]) == (2_000, 500, False)
    assert 0 < point["cold_start_s"] < 120 and 0 < point["warm_start_s"] < 120, point
    assert point["events_per_s"] > 10, point
    assert 0 < point["p50_ms"] <= point["p99_ms"] < 30_000, point
    # RSS: the catalogue only adds (2,000 videos are ~0.5 MB; both are sampled every 0.25 s while a starting worker grows)
    assert 50 < point["worker_base_mb"] <= point["worker_items_mb"] + 15, point
    # the 16-bit row is 2,008 B plus a key and the table's framing: any 4 KB float32 copy would show here
    assert 1_500 < point["changelog_bytes_per_user"] < 3_000, point
    assert 30 < point["event_bytes"] < 300 and 500 < point["record_bytes"] < 20_000, point  # for Kafka's MB/s per topic
    assert point["state_disk_bytes_per_user"] > 0 and point["item_disk_bytes_per_video"] is None, point  # memory item store
    table = (out_dir / "scale.md").read_text()
    assert table.startswith("item store: memory float32 1024 MiB\n\n| videos | users | measured |") and "| 2,000 | 500 | measured |" in table, table
    png = (out_dir / "scale.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_a_repeated_size_gets_its_own_state_folder_and_logs(tmp_path: Path) -> None:
    from dreamstream.bench.scale import _new_tag

    assert _new_tag(tmp_path, "v50000-u100") == "v50000-u100"
    (tmp_path / "v50000-u100-cold.log").touch()
    assert _new_tag(tmp_path, "v50000-u100") == "v50000-u100-2"  # the second 50k point of a run reused the first's state


def test_warm_start_milestones_read_both_log_formats(tmp_path: Path) -> None:
    """Our lines (ts=...) before Faust's worker starts, Faust's ([time] [pid] [LEVEL]) after: seconds from the launch."""
    import datetime as dt

    from dreamstream.bench.scale import log_milestones

    log = tmp_path / "warm.log"
    log.write_text("ts=2026-12-07 15:50:38,900 level=INFO logger=x msg=hello\n"
                   "ts=2026-12-07 15:50:39,200 level=INFO logger=streams.ops.reload msg=serving model bundle version=v1\n"
                   "[2026-12-07 15:50:39,500] [1] [INFO] (Re-)joining group g \n"
                   "[2026-12-07 15:50:42,500] [1] [INFO] Joined group 'g' (generation 1) \n"
                   "[2026-12-07 15:50:47,500] [1] [INFO] Joined group 'g' (generation 2) \n"
                   "[2026-12-07 15:50:48,000] [1] [INFO] first output seconds_since_start=9.1 \n")
    t0 = dt.datetime(2026, 12, 7, 15, 50, 38, 500_000).timestamp()
    assert log_milestones(log, t0) == {"logging": 0.4, "model": 0.7, "joining": 1.0, "joined": 4.0, "first_output": 9.5}
