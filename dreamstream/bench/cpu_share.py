"""Who used the box's CPU during a benchmark run: the worker, the broker, the load generator, the reader.

A latency number on a 2-core box means little without it. The worker's
maximum rate is measured on preloaded events, while the latency run also
feeds and reads them at the same time, and every process shares the same
two cores. Printing each process's share of a core next to the latency
shows when a rate is beyond the box, not beyond the worker. Linux only
(``/proc``); elsewhere the shares are simply not reported.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a running process (its threads included); None if it is gone or /proc is absent."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15 of stat(5))


def machine_busy_seconds() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, summed over cores; None without /proc."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values) - idle) / _TICKS, sum(values) / _TICKS


def busy_share(before: tuple[float, float] | None, after: tuple[float, float] | None) -> float | None:
    """Share of all cores the box was busy between two :func:`machine_busy_seconds` readings; None if unknown."""
    if not before or not after or after[1] <= before[1]:
        return None
    share = (after[0] - before[0]) / (after[1] - before[1])
    return min(1.0, max(0.0, share))  # float sums of /proc ticks can overshoot 1 by ~1e-12 on a saturated box


@dataclass
class CpuShare:
    """CPU seconds of named processes between :meth:`start` and :meth:`stop`, as shares of one core.

    A process that ends before :meth:`stop` (a feeder child) can report its
    own CPU seconds with :meth:`add`.
    """

    pids: dict[str, int | None]
    used: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0
    machine: float | None = None  # share of all cores the whole box was busy
    _start: dict[str, float] = field(default_factory=dict)
    _t0: float = 0.0
    _box0: tuple[float, float] | None = None

    def start(self) -> CpuShare:
        self._t0, self._box0 = time.monotonic(), machine_busy_seconds()
        self._start = {name: s for name, pid in self.pids.items() if pid and (s := process_cpu_seconds(pid)) is not None}
        return self

    def stop(self) -> CpuShare:
        self.wall = time.monotonic() - self._t0
        for name, before in self._start.items():
            after = process_cpu_seconds(self.pids[name] or 0)
            if after is not None:
                self.used[name] = after - before
        self.machine = busy_share(self._box0, machine_busy_seconds())
        return self

    def add(self, name: str, cpu_seconds: float) -> None:
        self.used[name] = self.used.get(name, 0.0) + cpu_seconds

    def summary(self) -> str:
        """``worker 88%, broker 45%, ... of one core; the box was 92% busy (2 cores)``, or '' when nothing was measured."""
        if not self.used or self.wall <= 0:
            return ""
        parts = ", ".join(f"{name} {100 * s / self.wall:.0f}%" for name, s in self.used.items())
        box = f"; the whole box was {100 * self.machine:.0f}% busy ({os.cpu_count()} cores)" if self.machine is not None else ""
        return f"{parts} of one core{box}"
