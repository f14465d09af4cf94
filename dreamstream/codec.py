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


def unpack_map(value: bytes | None) -> dict[str, Any]:
    """A record value that must be a msgpack map; ``ValueError`` says what it is instead (null, not msgpack, no map)."""
    if value is None:
        raise ValueError("value is null")
    try:
        obj = unpack(value)
    except Exception as err:  # msgpack raises several unrelated types on garbage
        raise ValueError(f"value is not msgpack: {type(err).__name__}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"value must be a map, got {type(obj).__name__}")
    return obj


def vec_to_bin(vector: np.ndarray) -> bytes:
    """A float vector or matrix as float32 little-endian row-major bytes."""
    return np.ascontiguousarray(vector, dtype=F32).tobytes()


def bin_to_vec(data: bytes, dim: int | None = None) -> np.ndarray:
    """Bytes back to float32; reshaped to ``[-1, dim]`` when ``dim`` is given."""
    arr = np.frombuffer(data, dtype=F32).astype(np.float32)
    return arr.reshape(-1, dim) if dim else arr


MAX_ID_BYTES = 256  # a user or video id (and so a record key) at most, as UTF-8


def key_bytes(ident: Any) -> bytes:
    """A user or video id as a Kafka key: its text as UTF-8."""
    return str(ident).encode("utf-8")


def id_of_key(key: bytes) -> str:
    """The id a record key names; ``ValueError`` for a key longer than any id (:data:`MAX_ID_BYTES`).

    Keys come from anyone who can produce: a 600 KB key must not become an
    item id held in every worker's table and every index version.
    """
    if len(key) > MAX_ID_BYTES:
        raise ValueError(f"key of {len(key)} bytes is over the {MAX_ID_BYTES}-byte limit of an id")
    return key.decode("utf-8", "replace")


def item_vector_record(video: Any, vector: np.ndarray, model: str, ts: int, live: bool = False) -> dict[str, Any]:
    """A value of ``item-vectors``; ``live``: a new video's vector, refined by its watchers (``streams.item_refiner``)."""
    record = {"video": str(video), "vector": vec_to_bin(vector), "model": model, "ts": int(ts)}
    if live:
        record["live"] = True
    return record


def tower_record(video: Any, vector: np.ndarray, space: str, ts: int) -> dict[str, Any]:
    """A value of ``item-watchers``: a new video's item-tower vector, the start of its live refinement.

    ``space``: the bundle's item space (``Manifest.item_space``), which a
    hot reload keeps and a retrained bundle changes.
    """
    return {"kind": "tower", "video": str(video), "vector": vec_to_bin(vector), "space": space, "ts": int(ts)}


def watcher_record(video: Any, user_vector: np.ndarray, weight: float, space: str, partition: int, offset: int,
                   index: int, ts: int) -> dict[str, Any]:
    """A value of ``item-watchers``: one watch of a new video with the watcher's unit vector just before it.

    ``partition`` / ``offset`` / ``index`` name the watch-event it came from:
    the refiner applies a source position once (a replayed batch re-sends it).
    """
    return {"kind": "watch", "video": str(video), "user": vec_to_bin(user_vector), "weight": float(weight),
            "space": space, "src": [int(partition), int(offset), int(index)], "ts": int(ts)}


# The bounds of a dead letter (docs/topics.md, "Limits"). A letter is written as a Kafka record whose key is the
# rejected input's key and whose value is this map, so both count: the record is cut to MAX_LETTER_BYTES in total,
# far under Kafka's default 1 MB message limit (message.max.bytes 1,048,588), whatever the input was.
MAX_LETTER_BYTES = 256 * 1024  # a letter's record, key and value together, at most
MAX_LETTER_KEY_BYTES = 1024  # a letter's copy of its input's key (and its record key), at most; ids are <= 256 bytes
MAX_LETTER_REASON_CHARS = 1000
MAX_LETTER_VALUE_BYTES = MAX_LETTER_BYTES - 2 * MAX_LETTER_KEY_BYTES - 4 * MAX_LETTER_REASON_CHARS - 1024  # the rest


def letter_key(key: bytes | None) -> bytes | None:
    """The record key of a dead letter: its input's key, cut to :data:`MAX_LETTER_KEY_BYTES`."""
    return None if key is None else bytes(key[:MAX_LETTER_KEY_BYTES])


def dead_letter(reason: str, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
                ) -> dict[str, Any]:
    """A value of ``watch-events-dlq``: the reason and the original bytes, so it can be re-driven.

    Bounded whatever the input: the key is cut to :data:`MAX_LETTER_KEY_BYTES`
    (``key_truncated: <original size>``), the value to
    :data:`MAX_LETTER_VALUE_BYTES` (``truncated: <original size>``) and the
    reason to :data:`MAX_LETTER_REASON_CHARS`, so the record (its key is
    :func:`letter_key`) stays under :data:`MAX_LETTER_BYTES`. A letter the
    DLQ refuses would stop the worker's commits, and the whole original
    stays addressable by its topic, partition and offset.
    """
    letter: dict[str, Any] = {"reason": str(reason)[:MAX_LETTER_REASON_CHARS],
                              "topic": str(topic)[:MAX_LETTER_KEY_BYTES], "partition": int(partition),
                              "offset": int(offset), "key": letter_key(key), "value": value}
    if key is not None and len(key) > MAX_LETTER_KEY_BYTES:
        letter["key_truncated"] = len(key)
    if value is not None and len(value) > MAX_LETTER_VALUE_BYTES:
        letter["value"] = bytes(value[:MAX_LETTER_VALUE_BYTES])
        letter["truncated"] = len(value)
    return letter
