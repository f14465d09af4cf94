"""The indexer's local store: the latest vector of every live item, grouped by shard.

Why per shard: a build rebuilds only the shards whose items changed, so the
store tracks a dirty flag per shard. Why a growing matrix plus a free list
and not a dict of arrays: a million small numpy arrays cost several times
the bytes of their data and are slow to stack at build time.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dreamstream.index.sharding import shard_of, shards_of


@dataclass
class ShardStore:
    """The live items of one shard: id -> row of a float32 matrix."""

    dim: int
    rows: dict[str, int] = field(default_factory=dict)
    ids: list[str | None] = field(default_factory=list)
    free: list[int] = field(default_factory=list)
    vectors: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.vectors = np.zeros((1024, self.dim), dtype=np.float32)

    def put(self, item_id: str, vector: np.ndarray) -> None:
        row = self.rows.get(item_id)
        if row is None:
            row = self.free.pop() if self.free else self._append_row()
            self.rows[item_id] = row
            self.ids[row] = item_id
        self.vectors[row] = vector

    def put_many(self, item_ids: list[str], vectors: np.ndarray) -> None:
        rows = np.empty(len(item_ids), dtype=np.int64)
        for n, item_id in enumerate(item_ids):
            row = self.rows.get(item_id)
            if row is None:
                row = self.free.pop() if self.free else self._append_row()
                self.rows[item_id] = row
                self.ids[row] = item_id
            rows[n] = row
        self.vectors[rows] = vectors

    def delete(self, item_id: str) -> bool:
        row = self.rows.pop(item_id, None)
        if row is None:
            return False
        self.ids[row] = None
        self.free.append(row)
        return True

    def snapshot(self) -> tuple[list[str], np.ndarray]:
        """The live ids (sorted, so a rebuild of the same set is reproducible) and their vectors."""
        ids = sorted(self.rows)
        rows = np.fromiter((self.rows[i] for i in ids), dtype=np.int64, count=len(ids))
        return ids, self.vectors[rows]

    def _append_row(self) -> int:
        row = len(self.ids)
        if row == len(self.vectors):
            grown = np.zeros((2 * len(self.vectors), self.dim), dtype=np.float32)
            grown[:row] = self.vectors
            self.vectors = grown
        self.ids.append(None)
        return row

    def __len__(self) -> int:
        return len(self.rows)


class ItemStore:
    """Latest unit vector per item, sharded by a stable hash, with per-shard dirty flags."""

    def __init__(self, shards: int, dim: int | None = None) -> None:
        self.shards = shards
        self.dim = dim
        self._parts: list[ShardStore] = []
        self.dirty: set[int] = set()
        if dim is not None:
            self._init(dim)

    def _init(self, dim: int) -> None:
        self.dim = dim
        self._parts = [ShardStore(dim) for _ in range(self.shards)]

    def put(self, item_id: str, vector: np.ndarray) -> None:
        """Insert or replace an item's vector (normalised to unit length: the metric is inner product)."""
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if self.dim is None:
            self._init(vector.size)
        if vector.size != self.dim:
            raise ValueError(f"item {item_id!r} has a {vector.size}-d vector but the index is {self.dim}-d")
        norm = float(np.linalg.norm(vector))
        if not np.isfinite(norm) or norm == 0.0:
            raise ValueError(f"item {item_id!r} has a zero or non-finite vector")
        shard = shard_of(item_id, self.shards)
        self._parts[shard].put(item_id, vector / norm)
        self.dirty.add(shard)

    def put_many(self, item_ids: list[str], vectors: np.ndarray) -> None:
        """Insert or replace many items at once: one vectorised normalisation and one copy per shard."""
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(item_ids), -1)
        if self.dim is None and len(item_ids):
            self._init(vectors.shape[1])
        if vectors.shape[1] != self.dim:
            raise ValueError(f"items have {vectors.shape[1]}-d vectors but the index is {self.dim}-d")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if not np.all(np.isfinite(norms) & (norms > 0)):
            raise ValueError("some items have a zero or non-finite vector")
        vectors = vectors / norms
        shards = shards_of(item_ids, self.shards)
        for shard in np.unique(shards):
            picked = np.flatnonzero(shards == shard)
            self._parts[shard].put_many([item_ids[i] for i in picked], vectors[picked])
            self.dirty.add(int(shard))

    def delete(self, item_id: str) -> None:
        """Remove an item (a tombstone); unknown ids are ignored, compaction may replay them."""
        if not self._parts:
            return
        shard = shard_of(item_id, self.shards)
        if self._parts[shard].delete(item_id):
            self.dirty.add(shard)

    def shard(self, shard: int) -> tuple[list[str], np.ndarray]:
        """Snapshot of one shard: sorted ids and their vectors [n, dim]."""
        if not self._parts:
            return [], np.zeros((0, self.dim or 0), dtype=np.float32)
        return self._parts[shard].snapshot()

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts)

    def __contains__(self, item_id: str) -> bool:
        return bool(self._parts) and item_id in self._parts[shard_of(item_id, self.shards)].rows
