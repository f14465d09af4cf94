"""Putting item vectors (or tombstones) on ``item-vectors``, batched for million-item catalogues."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from dreamstream import codec
from dreamstream.settings import Settings
from dreamstream.topics import ITEM_VECTORS


def item_producer(settings: Settings):
    """A kafka-python producer tuned for throughput: large batches, a short linger, acks from the leader."""
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id="dreamstream-publish-items",
        linger_ms=20,
        batch_size=1 << 20,
        max_request_size=8 << 20,
        acks=1,
    )


def publish_vectors(
    settings: Settings, ids: Sequence[str], vectors: np.ndarray, model: str, progress: bool = True
) -> int:
    """Send one record per item (key = video id). Returns how many were sent."""
    if len(ids) != len(vectors):
        raise ValueError(f"{len(ids)} ids but {len(vectors)} vectors: item_ids.json and items.npy disagree")
    topic = settings.topic(ITEM_VECTORS)
    ts = int(time.time() * 1000)
    producer = item_producer(settings)
    try:
        for item_id, vector in tqdm(zip(ids, vectors), total=len(ids), disable=not progress, desc="publish items", unit="item"):
            producer.send(topic, key=codec.key_bytes(item_id), value=codec.pack(codec.item_vector_record(item_id, vector, model, ts)))
        producer.flush()
    finally:
        producer.close()
    return len(ids)


def publish_tombstones(settings: Settings, ids: Iterable[str]) -> int:
    """Send a null value per id: the item leaves the index (and compaction drops its vector)."""
    topic = settings.topic(ITEM_VECTORS)
    producer = item_producer(settings)
    count = 0
    try:
        for item_id in ids:
            producer.send(topic, key=codec.key_bytes(item_id), value=None)
            count += 1
        producer.flush()
    finally:
        producer.close()
    return count


def load_bundle_items(bundle: Path) -> tuple[list[str], np.ndarray, str]:
    """``item_ids.json``, ``items.npy`` (memory-mapped) and the bundle's version name."""
    ids_path, vec_path = bundle / "item_ids.json", bundle / "items.npy"
    for path in (ids_path, vec_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: a bundle written by `dreamstream export` has items.npy and item_ids.json")
    ids = [str(i) for i in json.loads(ids_path.read_text("utf-8"))]
    vectors = np.load(vec_path, mmap_mode="r")
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise ValueError(f"{vec_path} has shape {vectors.shape} but {ids_path} lists {len(ids)} ids")
    model = bundle.name
    manifest = bundle / "manifest.json"
    if manifest.exists():
        model = str(json.loads(manifest.read_text("utf-8")).get("version", model))
    return ids, vectors, model


def latest_bundle(model_dir: Path) -> Path:
    """The newest bundle in ``model_dir``: the bundle module's answer when it exists, else the newest folder with a manifest."""
    try:
        from dreamstream.bundle import latest_version  # written by the export engineer
    except ImportError:
        latest_version = None
    if latest_version is not None:
        found = latest_version(model_dir)
        return Path(found) if Path(found).is_absolute() or Path(found).exists() else Path(model_dir) / str(found)
    candidates = [p for p in Path(model_dir).glob("*/manifest.json")]
    if not candidates:
        raise FileNotFoundError(f"no bundle (sub-folder with manifest.json) in {model_dir}; run `dreamstream export` or pass --bundle")
    return max(candidates, key=lambda p: (p.stat().st_mtime, p.parent.name)).parent
