"""The item table (every item vector, on every worker) and the item-tower agent that fills it.

The table *is* ``item-vectors``: a GlobalTable whose changelog topic is the
compacted ``item-vectors`` itself, so every worker recovers all of it to the
end offsets before any agent runs (Faust blocks agents during recovery) and
then follows it live; a null value removes an item. Values stay the raw
msgpack bytes in the table and are decoded to float32 on lookup, cached
until the stored bytes change.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import numpy as np

from dreamstream import codec

log = logging.getLogger(__name__)


class ItemLookup:
    """``get(video) -> float32 [D] | None`` over the table's raw values."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self._cache: dict[str, tuple[bytes, np.ndarray]] = {}

    def get(self, video: str) -> np.ndarray | None:
        raw = self.table.get(video.encode("utf-8"))
        if raw is None:
            return None
        hit = self._cache.get(video)
        if hit is not None and hit[0] is raw:
            return hit[1]
        try:
            vec = codec.bin_to_vec(codec.unpack(raw)["vector"])
        except Exception:
            log.warning("unreadable item-vectors value for video=%r; treating it as unknown", video[:64])
            return None
        self._cache[video] = (raw, vec)
        return vec

    def __len__(self) -> int:
        return len(self.table)


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
