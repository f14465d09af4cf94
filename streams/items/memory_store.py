"""The memory item store: the whole catalogue in one compact table, up to a ceiling the operator sets.

Fast (a lookup is a few vectorised probes and one gather) and simple, but
every worker holds every video and rebuilds the table from ``item-vectors``
at every start (nothing persists, so :meth:`offsets` is empty at start).
Above its ceiling (``DREAMSTREAM_ITEM_CACHE_MB``) a new video is refused
with a reason (the item table counts and logs it; its events become
dead letters), never silently dropped: that is the sign to move to the
RocksDB store (docs/scaling.md, "Item store").
"""
from __future__ import annotations

import time
from typing import Iterator, Sequence

import numpy as np

from streams.items.compact_table import CompactTable, row_bytes
from streams.items.live_videos import LiveVideos
from streams.items.store import ItemStore, LookupCounts


class MemoryItemStore(ItemStore):
    """Every vector in a :class:`CompactTable` of at most ``ceiling_bytes``."""

    lists_ids = False

    def __init__(self, dtype: np.dtype | str = np.float32, ceiling_bytes: int = 1 << 30) -> None:
        self.dtype, self.ceiling_bytes = np.dtype(dtype), ceiling_bytes
        self.table: CompactTable | None = None  # sized at the first vector, when the width is known
        self.applied: dict[int, int] = {}
        self.lookups = LookupCounts()
        self.live = LiveVideos()

    @property
    def dim(self) -> int | None:
        return self.table.dim if self.table is not None else None

    def _table(self, dim: int) -> CompactTable:
        if self.table is None:
            self.table = CompactTable(dim, self.dtype, max(1, self.ceiling_bytes // row_bytes(dim, self.dtype)))
        return self.table

    def lookup(self, videos: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        t0 = time.perf_counter()
        out = np.zeros((len(videos), self.dim or 0), np.float32)
        if self.table is None:
            self.lookups.count(0, 0, len(videos))
            return out, np.zeros(len(videos), bool)
        rows = self.table.find(videos)
        self.table.gather(rows, out)
        found = rows >= 0
        self.lookups.count(int(found.sum()), 0, len(videos), t0)
        return out, found

    def put(self, videos: Sequence[str], vectors: np.ndarray) -> np.ndarray:
        if not len(videos):
            return np.zeros(0, bool)
        return self._table(vectors.shape[1]).put_rows(videos, vectors, evict=False)

    def delete(self, videos: Sequence[str]) -> None:
        if self.table is not None and len(videos):
            self.table.delete(videos)

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        raise TypeError("the memory item store keeps id hashes, not ids: it cannot list its videos "
                        "(use the rocksdb store, or read item-vectors)")

    def __len__(self) -> int:
        return len(self.table) if self.table is not None else 0

    def offsets(self) -> dict[int, int]:
        return dict(self.applied)

    def commit(self, offsets: dict[int, int]) -> None:
        self.applied.update(offsets)

    def resident_bytes(self) -> int:
        return self.table.resident_bytes if self.table is not None else 0
