"""Helpers shared by the end-to-end tests (tests/streams, tests/scale): one place, imported as a plain module.

Every judgement here is on *state*: records on the topics, committed offsets
of the worker's group, the worker's /metrics page, its exit code. Log lines
are never asserted on; ``log_hint`` only helps a test wait where no state
shows what it waits for.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dreamstream import codec
from dreamstream.bench import harness as h
from dreamstream.topics import DLQ

REPO = Path(__file__).resolve().parents[1]
# The item store of every test's settings (tests/conftest.py): `TEST_ITEM_STORE=rocksdb` (and
# TEST_ITEM_DTYPE=float16) runs the tests on another store (not DREAMSTREAM_*: those never reach a test).
ITEM_STORE = {name: value for name in ("item_store", "item_dtype")
              if (value := os.environ.get(f"TEST_{name.upper()}"))}


# --- waiting -------------------------------------------------------------------------------------------------------
def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.1,
               detail: Callable[[], Any] | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout_s`` passes.

    On timeout: ``AssertionError`` naming ``what`` (and ``detail()``, e.g. a log tail, when given).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            extra = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for: {what}{extra}")
        time.sleep(interval_s)


def log_hint(worker: h.WorkerProcess, text: str, timeout_s: float) -> bool:
    """Wait (at most ``timeout_s``) for ``text`` in a worker's log; never fails: a *hint* to wait, not an assertion.

    Only for moments no metric, record or offset shows; the test then asserts on state.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and worker.alive():
        if text in worker.log_text():
            return True
        time.sleep(0.1)
    return text in worker.log_text()


# --- bundles -------------------------------------------------------------------------------------------------------
def export_random_bundle(model_dir: Path, n_items: int = 400, seed: int = 0) -> Path:
    """Run ``export.random_bundle`` in a child process (the tests stay torch-free); returns the version folder."""
    code = (
        "import sys; from export.bundle_writer import random_bundle; "
        f"print(random_bundle({str(model_dir)!r}, n_items={n_items}, seed={seed}))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return Path(done.stdout.strip().splitlines()[-1]).parent


def manifest(bundle_dir: Path) -> dict:
    return json.loads((bundle_dir / "manifest.json").read_text())


def install(bundle_dir: Path, model_dir: Path) -> Path:
    """Copy a bundle version into a model dir atomically (hidden name, then rename)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / f".{bundle_dir.name}.tmp"
    shutil.copytree(bundle_dir, tmp)
    return Path(tmp.rename(model_dir / bundle_dir.name))


def ready_stack(s: Any, bundle_dir: Path) -> dict[str, np.ndarray]:
    """A worker's world before it starts: the bundle installed, the topics made, every item vector published."""
    from dreamstream.bundle import load_bundle
    from dreamstream.topics import create_topics

    install(bundle_dir, s.model_dir)
    create_topics(s)
    bundle = load_bundle(bundle_dir)
    h.publish_items(s, bundle.item_ids, bundle.items, model=bundle.version)
    return dict(zip(bundle.item_ids, bundle.items))


# --- the reference -------------------------------------------------------------------------------------------------
def reference(events, items) -> dict[str, np.ndarray]:
    """DreamUMM with no decay, written out independently: s = sum_i r_i v_i."""
    sums: dict[str, np.ndarray] = {}
    for e in events:
        ratio = e["watch_ms"] / e["duration_ms"]
        r = -0.3 if ratio < 0.2 else min(ratio, 1.5)
        sums[e["user"]] = sums.get(e["user"], 0.0) + r * items[e["video"]].astype(np.float64)
    return sums


def counts(events) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in events:
        out[e["user"]] = out.get(e["user"], 0) + 1
    return out


def assert_exact(col: h.Collected, events, items, model: str | None = None) -> None:
    want = counts(events)
    ref = reference(events, items)
    assert set(col.latest) >= set(want)
    for user, n in want.items():
        rec = col.latest[user]
        assert rec["seq"] == n, (user, rec["seq"], n)
        v = codec.bin_to_vec(rec["vector"])
        cos = float(v @ ref[user] / np.linalg.norm(ref[user]))
        assert cos >= 0.9999, (user, cos)
        if model:
            assert rec["model"] == model
        seqs = [s for s, _ in col.arrivals[user]]
        assert seqs == sorted(seqs), (user, seqs)  # never goes back, even across crashes


# --- the worker's /metrics page ------------------------------------------------------------------------------------
def metrics_page(port: int) -> str | None:
    """The /metrics page of the worker on ``port``, or None when nothing answers (not up yet, gone)."""
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return None


def metric(body: str | None, name: str, **labels: str) -> float | None:
    """The value of sample ``name`` (with exactly ``labels``) on a /metrics page; None if absent."""
    from prometheus_client.parser import text_string_to_metric_families

    if body is None:
        return None
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def metric_of(port: int, name: str, **labels: str) -> float | None:
    """One sample read live from the worker on ``port`` (None when it does not answer or lacks the sample)."""
    return metric(metrics_page(port), name, **labels)


def metrics_when(s, line: str, timeout_s: float = 15.0) -> str:
    """The worker's /metrics page once it contains ``line`` (or at the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        body = metrics_page(s.web_port) or ""
        if line in body or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def samples(body: str | None, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample called ``name`` on a page: {sorted label pairs: value}."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(body or ""):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = float(sample.value)
    return out


# --- topics and committed offsets ----------------------------------------------------------------------------------
def read_topic(settings: Any, topic: str, timeout_s: float = 30.0) -> list[tuple[int, int, Any]]:
    """Every record of ``topic`` now on the broker, as (partition, offset, decoded value), each partition in order.

    Read from offset 0 up to the fetch high watermark of every partition (not
    ``end_offsets``: tansu's ListOffsets answers short, see ``streams.kafka.log_reader``).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def read() -> list[tuple[int, int, Any]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                                    enable_auto_commit=False, fetch_max_wait_ms=50)
        await consumer.start()
        try:
            await consumer.topics()
            parts = consumer.partitions_for_topic(topic)
            assert parts, f"topic {topic} has no partitions"
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            out: list[tuple[int, int, Any]] = []
            deadline = time.monotonic() + timeout_s
            while True:
                for tp, records in (await consumer.getmany(timeout_ms=200, max_records=20_000)).items():
                    out.extend((tp.partition, m.offset, codec.unpack(m.value) if m.value is not None else None)
                               for m in records)
                highs = [consumer.highwater(tp) for tp in tps]
                if all(hw is not None for hw in highs):
                    if all([await consumer.position(tp) >= hw for tp, hw in zip(tps, highs)]):
                        return out
                assert time.monotonic() < deadline, f"could not read {topic} to its end in {timeout_s}s"
        finally:
            await consumer.stop()

    return asyncio.run(read())


def read_dead_letters(settings: Any, expected: int, timeout_s: float) -> list[dict[str, Any]]:
    """The dead letters on watch-events-dlq once there are ``expected`` of them (or all there are at the timeout)."""
    col = asyncio.run(h.read_until(settings, settings.topic(DLQ), lambda c: c.count >= expected, timeout_s))
    return [v for k, v in col.latest.items() if k.startswith("#")]


def worker_group(settings: Any) -> str:
    """The consumer group whose committed offsets are the worker's positions on watch-events (streams.worker)."""
    return f"{settings.topic_prefix}dreamstream-positions"


def committed_offsets(settings: Any, topic: str, group: str) -> dict[int, int | None]:
    """The offsets ``group`` has committed on every partition of ``topic`` (None: nothing committed)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def read() -> dict[int, int | None]:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=group,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            await consumer.topics()
            parts = sorted(consumer.partitions_for_topic(topic) or ())
            assert parts, f"topic {topic} has no partitions"
            return {p: await consumer.committed(TopicPartition(topic, p)) for p in parts}
        finally:
            await consumer.stop()

    return asyncio.run(read())
