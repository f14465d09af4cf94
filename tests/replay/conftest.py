"""Fixtures for replay tests: a small RecBole dataset written to disk, and a reader of a whole topic."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest



def _write_inter(folder: Path, rows: list[tuple], watch: bool = True, name: str = "mini") -> Path:
    """Write ``rows`` of (user, item, rating, ts[, watch_ms, duration_ms]) as ``<name>.inter``."""
    folder.mkdir(parents=True, exist_ok=True)
    header = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    if watch:
        header += ["watch_ms:float", "duration_ms:float"]
    lines = ["\t".join(header)] + ["\t".join(str(x) for x in r[: len(header)]) for r in rows]
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def mini_rows() -> list[tuple]:
    """30 users x 8 events, timestamps shuffled in file order, with deliberate ties across users."""
    rng = np.random.default_rng(7)
    rows = []
    for u in range(30):
        for j in range(8):
            ts = 1_700_000_000 + 10 * j + (u % 3)  # users u, u+3, ... share timestamps: ties
            duration = 10_000 + 1000 * (u % 5)
            watch = duration if j % 4 else duration // 10  # every 4th event a quick skip
            rows.append((f"u{u}", f"v{(u * 7 + j) % 40}", 1.0, ts, watch, duration))
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


def _read_topic(settings, topic: str, expected: int, timeout_s: float = 20.0) -> list:
    """Every record of ``topic`` (all partitions, from the start) once ``expected`` have arrived."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list = []
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


@pytest.fixture
def write_inter():
    """``write_inter(folder, rows, watch=True)``: a RecBole ``.inter`` file from tuples."""
    return _write_inter


@pytest.fixture
def read_topic():
    """``read_topic(settings, topic, expected)``: every record of a topic from the start."""
    return _read_topic
