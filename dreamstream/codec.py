"""The wire format of every topic: msgpack maps, vectors as little-endian float32 ``bin``.

Kept in one place because producers (publish-items, replay, bench, tests) and
consumers (worker, indexer, client) must agree byte for byte.
"""
from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

F32 = np.dtype("<f4")


def pack(value: Any) -> bytes:
    """Serialise a value as msgpack (bin type for bytes, str for text)."""
    return msgpack.packb(value, use_bin_type=True)


def unpack(data: bytes) -> Any:
    """Deserialise msgpack; raises ``ValueError`` subclasses on bad bytes."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def vec_to_bin(vector: np.ndarray) -> bytes:
    """A float vector or matrix as float32 little-endian row-major bytes."""
    return np.ascontiguousarray(vector, dtype=F32).tobytes()


def bin_to_vec(data: bytes, dim: int | None = None) -> np.ndarray:
    """Bytes back to float32; reshaped to ``[-1, dim]`` when ``dim`` is given."""
    arr = np.frombuffer(data, dtype=F32).astype(np.float32)
    return arr.reshape(-1, dim) if dim else arr


def key_bytes(ident: Any) -> bytes:
    """A user or video id as a Kafka key: its text as UTF-8."""
    return str(ident).encode("utf-8")


def item_vector_record(video: Any, vector: np.ndarray, model: str, ts: int) -> dict[str, Any]:
    """A value of ``item-vectors``."""
    return {"video": str(video), "vector": vec_to_bin(vector), "model": model, "ts": int(ts)}


MAX_LETTER_VALUE_BYTES = 256 * 1024  # a letter's copy of its input, at most: far under any topic's max.message.bytes


def dead_letter(reason: str, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
                ) -> dict[str, Any]:
    """A value of ``watch-events-dlq``: the reason and the original bytes, so it can be re-driven.

    A value over :data:`MAX_LETTER_VALUE_BYTES` is cut to that size and the
    letter says ``truncated: <original size>``: a letter the DLQ refuses
    would stop the worker's commits, and the whole original stays
    addressable by its topic, partition and offset.
    """
    letter = {"reason": reason, "topic": topic, "partition": int(partition), "offset": int(offset), "key": key,
              "value": value}
    if value is not None and len(value) > MAX_LETTER_VALUE_BYTES:
        letter["value"] = bytes(value[:MAX_LETTER_VALUE_BYTES])
        letter["truncated"] = len(value)
    return letter
