"""`dreamstream demo` end to end on a small dataset, twice in the same folder (a rerun must work)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _run_demo(workdir: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "dreamstream", "demo", "--workdir", str(workdir), "--users", "400", "--items", "600",
         "--epochs", "3", "--timeout", "180"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_demo_runs_twice_and_ends_with_a_readable_result(tmp_path: Path) -> None:
    for _ in range(2):
        out = _run_demo(tmp_path / "demo")
        tail = out[out.index("Retrieval of each user's held-out video"):]
        streamed = re.search(r"^streamed \(client\)\s+([\d.]+)", tail, re.M)
        popularity = re.search(r"^popularity\s+([\d.]+)", tail, re.M)
        assert streamed and popularity, tail
        cosine = float(re.search(r"min cosine ([\d.]+)", tail).group(1))
        assert cosine >= 0.9999
        assert re.search(r"throughput: [\d,]+ events applied", tail)
        assert re.search(r"p99 \d+ ms", tail)
        assert "result: OK" in tail
        assert (tmp_path / "demo" / "demo.png").stat().st_size > 10_000
