"""Putting item vectors (or tombstones) on ``item-vectors``, batched for million-item catalogues."""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from dreamstream import codec
from dreamstream.kafka.partitioner import kafka_partition
from dreamstream.kafka.security import aiokafka_options
from dreamstream.settings import Settings
from dreamstream.topics import ITEM_VECTORS


async def _send_records(settings: Settings, records: Iterable[tuple[bytes, bytes | None]], total: int | None, progress: bool,
                        topic_name: str = ITEM_VECTORS) -> int:
    """Send (key, value) records to ``topic_name`` (``item-vectors``) in full batches, each to its key's murmur2 partition.

    Why batches built by hand: the per-record ``send`` of a Kafka client
    costs tens of microseconds in Python; aiokafka's batch builder (C) and
    one request per full batch publish a million items in seconds.
    """
    from aiokafka import AIOKafkaProducer

    topic = settings.topic(topic_name)
    producer = AIOKafkaProducer(
        **aiokafka_options(settings),
        client_id="dreamstream-publish-items",
        acks=1,
        linger_ms=20,
        max_batch_size=1 << 20,
        max_request_size=8 << 20,
    )
    await producer.start()
    try:
        partitions = len(await producer.partitions_for(topic))
        batches = [producer.create_batch() for _ in range(partitions)]
        in_flight: list[asyncio.Future] = []
        sent = 0
        with tqdm(total=total, disable=not progress, desc=f"publish {topic_name}", unit="item") as bar:
            for key, value in records:
                part = kafka_partition(key, partitions)
                if batches[part].append(key=key, value=value, timestamp=None) is None:
                    in_flight.append(await _flush(producer, batches[part], topic, part))
                    batches[part] = producer.create_batch()
                    if batches[part].append(key=key, value=value, timestamp=None) is None:
                        raise ValueError(f"record for key {key!r} is larger than a whole batch")
                    if len(in_flight) >= 16:  # bound the memory held by unacknowledged batches
                        await asyncio.gather(*in_flight)
                        in_flight.clear()
                sent += 1
                bar.update(1)
            for part, batch in enumerate(batches):
                if batch.record_count():
                    in_flight.append(await _flush(producer, batch, topic, part))
            await asyncio.gather(*in_flight)
        return sent
    finally:
        await producer.stop()


async def _flush(producer, batch, topic: str, partition: int) -> asyncio.Future:
    batch.close()
    return await producer.send_batch(batch, topic, partition=partition)


def publish_vectors(
    settings: Settings, ids: Sequence[str], vectors: np.ndarray, model: str, progress: bool = True
) -> int:
    """Put one record per item on ``item-vectors`` (key = video id). Returns how many were sent."""
    if len(ids) != len(vectors):
        raise ValueError(f"{len(ids)} ids but {len(vectors)} vectors: item_ids.json and items.npy disagree")
    ts = int(time.time() * 1000)
    records = (
        (codec.key_bytes(item_id), codec.pack(codec.item_vector_record(item_id, vector, model, ts)))
        for item_id, vector in zip(ids, vectors)
    )
    return asyncio.run(_send_records(settings, records, len(ids), progress))


def publish_tombstones(settings: Settings, ids: Iterable[str]) -> int:
    """Put a null value per id: the item leaves the index (and compaction drops its vector)."""
    ids = list(ids)
    return asyncio.run(_send_records(settings, ((codec.key_bytes(i), None) for i in ids), len(ids), progress=False))


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
    """The newest bundle in ``model_dir``, as :func:`dreamstream.bundle.latest_version` orders them."""
    from dreamstream.bundle import latest_version

    found = latest_version(model_dir)
    if found is None:
        raise FileNotFoundError(f"no bundle (sub-folder with manifest.json) in {model_dir}; run `dreamstream export` or pass --bundle")
    return Path(found)
