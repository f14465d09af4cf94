"""Helpers of the scale-out tests: a live reader of every record, exactness of whole histories.

The bundle export, the exactness helpers and the waits are shared with the
stream tests through ``tests/e2e_support.py``, so both suites judge the
worker by the same reference.
"""
from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dreamstream import codec
from dreamstream.bench import harness as h
from dreamstream.bundle import load_bundle
from dreamstream.client import user_partition
from dreamstream.topics import USER_EMBEDDINGS, create_topics
from e2e_support import counts, install, wait_until
from streams.compat import fetch_cancel

PARTITIONS = 8
FAST_GROUP = dict(session_timeout_s=4.0, heartbeat_interval_s=0.5, rebalance_timeout_s=4.0)


@dataclass
class Seen:
    """Every user-embeddings record a live reader saw: (seq, vector, wall time of arrival) per user."""

    records: dict[str, list[tuple[int, np.ndarray, float]]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def latest_seq(self, user: str) -> int:
        recs = self.records.get(user)
        return recs[-1][0] if recs else 0

    def has(self, expected: dict[str, int]) -> bool:
        return all(max((r[0] for r in self.records.get(u, [])), default=0) >= n for u, n in expected.items())

    def wait_for(self, expected: dict[str, int], timeout_s: float) -> bool:
        try:
            return wait_until(lambda: self.has(expected), timeout_s, "every user's expected seq", interval_s=0.2)
        except AssertionError:
            return False

    def missing(self, expected: dict[str, int], partitions: int) -> dict[int, list[tuple[str, int, int]]]:
        """Per partition, the users short of their expected seq: (user, seen, expected) - for failure messages."""
        out: dict[int, list[tuple[str, int, int]]] = {}
        for u, n in expected.items():
            got = max((r[0] for r in self.records.get(u, [])), default=0)
            if got < n:
                out.setdefault(user_partition(u, partitions), []).append((u, got, n))
        return out

    def close(self) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join(10)

    def first_after(self, t: float, users: set[str]) -> float | None:
        """Wall time of the first record of any of ``users`` that arrived after ``t``."""
        times = [at for u in users for _, _, at in self.records.get(u, []) if at > t]
        return min(times) if times else None


async def _follow(settings: Any, seen: Seen) -> None:
    from aiokafka import AIOKafkaConsumer

    cons = AIOKafkaConsumer(settings.topic(USER_EMBEDDINGS), bootstrap_servers=settings.bootstrap_servers,
                            auto_offset_reset="earliest", enable_auto_commit=False, group_id=None, fetch_max_wait_ms=20,
                            request_timeout_ms=10_000, retry_backoff_ms=200)
    await cons.start()
    try:
        while not seen.stop.is_set():
            try:
                batches = await cons.getmany(timeout_ms=100, max_records=20000)
            except Exception:  # broker restarting: keep trying
                await asyncio.sleep(0.5)
                continue
            now = time.time()
            for records in batches.values():
                for m in records:
                    rec = codec.unpack(m.value)
                    seen.records.setdefault(rec["user"], []).append((rec["seq"], codec.bin_to_vec(rec["vector"]), now))
    finally:
        await cons.stop()


def start_reader(settings: Any) -> Seen:
    """A background reader of user-embeddings from the beginning (call ``close()`` when done)."""
    fetch_cancel.install()  # its stop after a broker restart would raise CancelledError in the thread otherwise
    seen = Seen()
    seen.thread = threading.Thread(target=asyncio.run, args=(_follow(settings, seen),), daemon=True)
    seen.thread.start()
    return seen


def assert_exact_history(seen: Seen, events: list[dict], items: dict[str, np.ndarray]) -> None:
    """End state exact, and every record on the way: seqs never go back, each vector = its reference prefix."""
    want = counts(events)
    prefix: dict[str, list[np.ndarray]] = {}
    for e in events:  # the single-pass reference, kept at every prefix length
        ratio = e["watch_ms"] / e["duration_ms"]
        r = -0.3 if ratio < 0.2 else min(ratio, 1.5)
        acc = prefix.setdefault(e["user"], [np.zeros(items[e["video"]].shape, np.float64)])
        acc.append(acc[-1] + r * items[e["video"]].astype(np.float64))
    for user, n in want.items():
        recs = seen.records.get(user, [])
        assert recs, f"no record for {user}"
        seqs = [s for s, _, _ in recs]
        assert seqs == sorted(seqs), (user, seqs)  # per-user order kept, never goes back
        assert seqs[-1] == n, (user, seqs[-1], n)  # none lost, none applied twice
        for seq, vec, _ in recs:
            ref = prefix[user][seq]
            norm = np.linalg.norm(ref)
            if norm > 1e-9:
                cos = float(vec @ ref / norm)
                assert cos >= 0.9999, (user, seq, cos)


def setup_stack(make_settings, bundle_dir: Path, **overrides):
    """Settings (8 partitions, fast group timeouts, overridable), topics, the bundle installed, items published."""
    s = make_settings(**{**dict(partitions=PARTITIONS, cold_min_positive=0, batch_size=256, batch_timeout_s=0.05,
                                store="memory://", web_port=0, **FAST_GROUP), **overrides})
    install(bundle_dir, s.model_dir)
    create_topics(s)
    bundle = load_bundle(bundle_dir)
    h.publish_items(s, bundle.item_ids, bundle.items, model=bundle.version)
    return s, dict(zip(bundle.item_ids, bundle.items))


def partitions_of(users: set[str], partitions: int) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for u in users:
        out.setdefault(user_partition(u, partitions), set()).add(u)
    return out


def log_counts(settings: Any, topic: str) -> dict[int, int]:
    """Records the broker holds per partition of ``topic``, read from the beginning to the fetch high watermark."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def count() -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or range(PARTITIONS))]
            seen = {tp.partition: 0 for tp in tps}
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            for _ in range(20):
                for tp, records in (await consumer.getmany(timeout_ms=300, max_records=10_000)).items():
                    seen[tp.partition] += len(records)
            return seen
        finally:
            await consumer.stop()

    return asyncio.run(count())
