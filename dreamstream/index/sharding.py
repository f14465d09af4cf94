"""Which shard an item lives in: a stable hash of its id.

Python's ``hash`` of a str is salted per process, so two processes (or one
restart) would disagree; crc32 of the UTF-8 bytes is stable everywhere and
fast enough for millions of ids.
"""
from __future__ import annotations

import zlib
from typing import Iterable

import numpy as np


def shard_of(item_id: str, shards: int) -> int:
    """The shard of one item id (its text as UTF-8, crc32, modulo the shard count)."""
    return zlib.crc32(str(item_id).encode("utf-8")) % shards


def shards_of(item_ids: Iterable[str], shards: int) -> np.ndarray:
    """The shard of each id, as an int array in the same order."""
    return np.fromiter((zlib.crc32(str(i).encode("utf-8")) % shards for i in item_ids), dtype=np.int64)


def shard_file(shard: int) -> str:
    """The file name of a shard's Faiss index inside a version folder."""
    return f"shard-{shard:03d}.faiss"


def ids_file(shard: int) -> str:
    """The file name of a shard's packed id list (row i = Faiss id i; :mod:`dreamstream.index.item_ids`).

    Versions built before it have ``shard-NNN.ids.json`` (a JSON array); the manifest names whichever it holds.
    """
    return f"shard-{shard:03d}.ids.bin"


def vectors_file(shard: int) -> str:
    """The file name of a compressed shard's float32 vectors (:mod:`dreamstream.index.shard_vectors`)."""
    return f"shard-{shard:03d}.vectors.f32"
