"""The item table (every item vector, on every worker) and the item tower that fills it.

The table follows the compacted ``item-vectors`` topic with a plain,
group-less consumer over all its partitions: every worker holds every
item, a null value removes one. At start it reads up to the end offsets it
found (by fetch high watermarks, see :func:`streams.log_reader.caught_up`) and only then sets ``ready``; the user agent waits for ``ready``
before it touches ``watch-events``, so no event meets a half-loaded
catalogue. (Faust's GlobalTable was the first choice; on this broker its
recovery never completed - measured: timers and agents never started - so
this is its equivalent in ~50 lines, with decoded vectors as values.)
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Sequence

import numpy as np

from dreamstream import codec
from dreamstream.settings import Settings
from streams.log_reader import caught_up, read_from_start

log = logging.getLogger(__name__)


class ItemTable:
    """``get(video) -> float32 [D] | None``, kept up to date from ``item-vectors``."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self.vectors: dict[str, np.ndarray] = {}
        self.ready = asyncio.Event()
        self.caught_up_s: float | None = None

    def get(self, video: str) -> np.ndarray | None:
        return self.vectors.get(video)

    def __len__(self) -> int:
        return len(self.vectors)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One item-vectors record: a vector, or a tombstone (null) removing the item."""
        if key is None:
            return
        video = key.decode("utf-8", "replace")
        if value is None:
            self.vectors.pop(video, None)
            return
        try:
            self.vectors[video] = codec.bin_to_vec(codec.unpack(value)["vector"])
        except Exception:
            log.warning("unreadable item-vectors value for video=%r; ignoring it", video[:64])

    async def follow(self) -> None:
        """Read item-vectors from the beginning, set ``ready`` at the end offsets, then keep following."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        t0 = time.monotonic()
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=100)
        await consumer.start()
        try:
            parts = None
            while not parts:
                parts = await consumer._client.fetch_all_metadata() and consumer.partitions_for_topic(self.topic)
                if not parts:
                    await asyncio.sleep(0.2)
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]

            async def mark_ready() -> bool:
                if not self.ready.is_set() and await caught_up(consumer, tps):
                    self.caught_up_s = time.monotonic() - t0
                    log.info("item table caught up items=%d seconds=%.2f", len(self.vectors), self.caught_up_s)
                    self.ready.set()
                return False  # keep following: new and removed items arrive all the time

            await read_from_start(consumer, tps, lambda m: self.apply(m.key, m.value), mark_ready)
        finally:
            await consumer.stop()


def parse_features(value: bytes | None, text_dim: int, visual_dim: int) -> tuple[str, np.ndarray, np.ndarray, int]:
    """An ``item-features`` value -> (video, text [Dt], visual [Dv], ts); ``ValueError`` says what is wrong."""
    if value is None:
        raise ValueError("value is null")
    try:
        obj = codec.unpack(value)
    except Exception as err:
        raise ValueError(f"value is not msgpack: {type(err).__name__}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"value must be a map, got {type(obj).__name__}")
    video = obj.get("video")
    if isinstance(video, bool) or not isinstance(video, (str, int)) or not str(video) or len(str(video).encode()) > 256:
        raise ValueError("field 'video' must be a non-empty str or int id of at most 256 bytes")
    vecs = []
    for name, dim in (("text", text_dim), ("visual", visual_dim)):
        raw = obj.get(name)
        if not isinstance(raw, (bytes, bytearray)) or len(raw) != 4 * dim:
            raise ValueError(f"field '{name}' must be {dim} float32 as bin ({4 * dim} bytes)")
        vec = codec.bin_to_vec(raw)
        if not np.isfinite(vec).all():
            raise ValueError(f"field '{name}' has non-finite values")
        vecs.append(vec)
    ts = obj.get("ts", int(time.time() * 1000))
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise ValueError("field 'ts' must be an int")
    return str(video), vecs[0], vecs[1], ts


def tower_dims(bundle: Any) -> tuple[int, int]:
    """Widths of the item tower's text and visual inputs."""
    return int(bundle.manifest.text_dim), int(bundle.manifest.visual_dim)


def embed(bundle: Any, text: Sequence[np.ndarray], visual: Sequence[np.ndarray]) -> np.ndarray:
    """Item vectors [B, D] for a batch of new videos, one ``session.run``."""
    out = bundle.sessions["item_tower"].run(["item"], {"text": np.stack(text).astype(np.float32), "visual": np.stack(visual).astype(np.float32)})
    return out[0]
