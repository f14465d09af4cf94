"""The demo, step by step: every process of the product, started, fed, measured and stopped.

Each step is a small function so a failing step is named in the output;
everything started is stopped in ``finally`` so the demo always ends by
itself, and every run starts from an empty work folder so a rerun works.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dreamstream.bench.harness import Collected, WorkerProcess, read_until, settings_env
from dreamstream.broker import EmbeddedBroker, free_port
from dreamstream.settings import Settings
from dreamstream.topics import USER_EMBEDDINGS

Echo = Callable[[str], None]


@dataclass(frozen=True)
class DemoOptions:
    """What a person can change about the demo (flags of `dreamstream demo`)."""

    workdir: Path
    users: int
    items: int
    epochs: int
    live_rate: float
    seed: int
    timeout_s: float


class Steps:
    """Numbered, timed progress lines: the demo's narration."""

    def __init__(self, total: int, echo: Echo) -> None:
        self.total, self.echo, self.n, self.t0 = total, echo, 0, time.monotonic()

    def __call__(self, text: str) -> None:
        self.n += 1
        self.echo(f"\n[{self.n}/{self.total}] {text}  (t+{time.monotonic() - self.t0:.0f}s)")


def cli(*args: str) -> list[str]:
    """The `dreamstream` console script of this interpreter, with arguments."""
    return [sys.executable, "-m", "dreamstream", *args]


def run_cli(settings: Settings, *args: str) -> None:
    """Run a dreamstream command in the foreground, its progress bars on this terminal."""
    done = subprocess.run(cli(*args), env=settings_env(settings))
    if done.returncode != 0:
        raise RuntimeError(f"`dreamstream {' '.join(args)}` failed with exit code {done.returncode}")


def demo_settings(opts: DemoOptions, broker: EmbeddedBroker) -> Settings:
    """Settings of every process of the demo: private broker, folders under the work dir, fast indexing."""
    return Settings(
        broker=broker.url, topic_prefix="demo.", partitions=4,
        model_dir=opts.workdir / "models", index_dir=opts.workdir / "index",
        data_dir=opts.workdir / "data", state_dir=opts.workdir / "state",
        web_port=free_port(), index_shards=2, index_interval_s=2.0, log_level="warning",
    )


def fresh_workdir(workdir: Path) -> None:
    """Empty the work folder so a rerun never reads the previous run's state."""
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "logs").mkdir(parents=True)


class RecordReader:
    """Reads user-embeddings in a thread from the start, until every user reached the expected seq."""

    def __init__(self, settings: Settings, expected: dict[str, int], timeout_s: float) -> None:
        import asyncio

        self.collected = Collected()
        done = lambda col: all(col.latest.get(u, {}).get("seq", 0) >= n for u, n in expected.items())  # noqa: E731
        self._thread = threading.Thread(
            target=lambda: asyncio.run(read_until(settings, settings.topic(USER_EMBEDDINGS), done, timeout_s,
                                                  collected=self.collected)),
            daemon=True, name="demo-records")
        self._thread.start()

    def reached(self, expected: dict[str, int]) -> int:
        """How many users have a record with at least their expected seq."""
        latest = dict(self.collected.latest)
        return sum(latest.get(u, {}).get("seq", 0) >= n for u, n in expected.items())

    def wait(self, expected: dict[str, int], timeout_s: float, what: str, echo: Echo) -> float:
        """Block until every user reached ``expected`` (progress every few seconds); returns the wall time."""
        from tqdm import tqdm

        deadline = time.monotonic() + timeout_s
        with tqdm(total=len(expected), desc=what, unit="user") as bar:
            while (n := self.reached(expected)) < len(expected):
                bar.update(n - bar.n)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{what}: only {n}/{len(expected)} users reached their seq in {timeout_s:.0f}s")
                time.sleep(0.05)
            bar.update(len(expected) - bar.n)
        return time.time()

    def join(self) -> None:
        self._thread.join(timeout=30)


def live_latencies(collected: Collected, sent_at: dict[str, float], expected: dict[str, int]) -> np.ndarray:
    """Per live event: ms from its send to the arrival of the record carrying its seq."""
    out = []
    for user, sent in sent_at.items():
        arrived = [t for seq, t in collected.arrivals.get(user, []) if seq == expected[user]]
        if arrived:
            out.append((min(arrived) - sent) * 1000.0)
    return np.array(out)


def start_services(settings: Settings, logs: Path) -> list[WorkerProcess]:
    """The worker and the indexer, as the operator would run them."""
    worker = WorkerProcess(settings, logs / "worker.log", command=cli("worker")).start()
    indexer = WorkerProcess(settings, logs / "indexer.log", command=cli("indexer")).start()
    return [worker, indexer]


def check_alive(procs: list[WorkerProcess]) -> None:
    for proc in procs:
        if not proc.alive():
            tail = "\n".join(proc.log_text().splitlines()[-20:])
            raise RuntimeError(f"{proc.log_path.stem} exited (code {proc.proc.returncode}); last log lines:\n{tail}")
