"""The item tower's input and output: parsing ``item-features`` values and embedding them with the bundle.

Pure: bytes in, (video, text, visual, ts) or a ``ValueError`` that says what
is wrong out; the embedding is one ONNX ``session.run`` per batch.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from dreamstream import codec


def parse_features(value: bytes | None, text_dim: int, visual_dim: int) -> tuple[str, np.ndarray, np.ndarray, int]:
    """An ``item-features`` value -> (video, text [Dt], visual [Dv], ts); ``ValueError`` says what is wrong."""
    obj = codec.unpack_map(value)
    video = obj.get("video")
    if (isinstance(video, bool) or not isinstance(video, (str, int)) or not str(video)
            or len(str(video).encode("utf-8", "surrogatepass")) > codec.MAX_ID_BYTES):
        raise ValueError(f"field 'video' must be a non-empty str or int id of at most {codec.MAX_ID_BYTES} bytes")
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
