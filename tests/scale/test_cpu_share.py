"""The bench's CPU accounting: a process's CPU seconds between start and stop, and a summary a person can read."""
from __future__ import annotations

import subprocess
import sys

from dreamstream.bench.cpu_share import CpuShare, machine_busy_seconds, process_cpu_seconds

SPIN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\nprint('spun', flush=True)\ntime.sleep(30)"


def test_a_spinning_child_is_charged_its_cpu_seconds() -> None:
    child = subprocess.Popen([sys.executable, "-c", SPIN], stdout=subprocess.PIPE, text=True)
    try:
        share = CpuShare({"spinner": child.pid, "gone": None}).start()
        assert child.stdout.readline().strip() == "spun"
        share.stop()
    finally:
        child.kill()
        child.wait()
    assert share.used["spinner"] >= 0.2  # it burned 0.3 s of CPU, most of it after start (interpreter start-up is before)
    assert "gone" not in share.used  # no pid: not measured, not reported as 0%
    share.add("load generator", 0.1)
    text = share.summary()
    assert text.startswith("spinner ") and "load generator" in text and "of one core" in text
    assert 0 <= share.machine <= 1


def test_missing_processes_and_an_empty_run_report_nothing() -> None:
    assert process_cpu_seconds(2 ** 22 + 12345) is None  # above the kernel's pid limit: never a live process
    busy, total = machine_busy_seconds()
    assert 0 <= busy <= total
    assert CpuShare({}).summary() == ""
