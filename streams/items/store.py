"""The item store: what a worker needs of the catalogue, whichever way it is kept.

Every worker needs the vector of every video its events name. How they are
kept is a trade of RAM against disk and start time (docs/scaling.md, "Item
store"):

* ``memory`` (:class:`streams.items.memory_store.MemoryItemStore`): every
  vector in one compact matrix (~150 B a 64-d video in float16), rebuilt
  from the ``item-vectors`` topic at every start;
* ``rocksdb`` (:class:`streams.items.rocks_store.RocksItemStore`): every
  vector on local disk, a bounded cache of hot videos in RAM, and the topic
  offsets it has applied stored with the vectors, so a restart reads only
  the tail of the topic (the Kafka Streams GlobalKTable pattern).

Both answer a batch: :meth:`ItemStore.lookup` takes the ids of a batch's
events and returns one float32 matrix and a found mask, with no Python work
per id beyond hashing it.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from dreamstream.settings import Settings
from streams.items.live_videos import LiveVideos

MB = 1 << 20


@dataclass
class LookupCounts:
    """Looked-up ids since the store opened, by where the answer came from.

    Why: the RocksDB store's cost per event is its hot cache's miss rate
    times a point read, so the worker exports these
    (``dreamstream_item_lookups_total``) and ``bench-scale`` reports the hit rate.
    """

    cache: int = 0  # answered from RAM (the memory store's table, the rocksdb store's hot cache)
    disk: int = 0  # read from RocksDB (a hot-cache miss)
    absent: int = 0  # in no store: the event becomes an unknown-video dead letter
    seconds: float = 0.0  # spent in lookups (the item store's share of a worker's time per event)

    def count(self, found_in_ram: int, read: int, looked_up: int, since: float | None = None) -> None:
        """One lookup's counts; ``since``: its ``time.perf_counter()`` at the start."""
        self.cache += found_in_ram
        self.disk += read
        self.absent += looked_up - found_in_ram - read
        if since is not None:
            self.seconds += time.perf_counter() - since


class ItemStore(ABC):
    """Vectors by video id, and the ``item-vectors`` offsets they reflect."""

    dtype: np.dtype  # how vectors are held (float32, or float16: half the bytes, see docs/scaling.md)
    lists_ids: bool = True  # can :meth:`items` list the stored ids (the memory store keeps hashes only)
    lookups: LookupCounts  # set by each store's constructor
    live: LiveVideos  # set by each store's constructor: the stored videos refined by their watchers

    @property
    @abstractmethod
    def dim(self) -> int | None:
        """The vectors' width (None while the store is empty and has never held one)."""

    @abstractmethod
    def lookup(self, videos: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """float32 [n, D] vectors of ``videos`` (zero rows where absent) and a bool [n] found mask."""

    @abstractmethod
    def put(self, videos: Sequence[str], vectors: np.ndarray) -> np.ndarray:
        """Store ``vectors[i]`` (float32 [n, D]) as ``videos[i]``'s; bool [n]: stored, or refused (store full)."""

    @abstractmethod
    def delete(self, videos: Sequence[str]) -> None:
        """Forget ``videos`` (a tombstone on the topic); absent ones are ignored."""

    @abstractmethod
    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        """Every (video, float32 vector); ``TypeError`` if the store does not keep ids (``lists_ids``)."""

    @abstractmethod
    def __len__(self) -> int:
        """Videos stored."""

    @abstractmethod
    def offsets(self) -> dict[int, int]:
        """Per ``item-vectors`` partition: the next offset to read (every record before it is applied)."""

    @abstractmethod
    def commit(self, offsets: dict[int, int]) -> None:
        """Everything below ``offsets`` is applied: remember it (on disk, with the vectors, if the store persists)."""

    @abstractmethod
    def resident_bytes(self) -> int:
        """Bytes of RAM the store's own arrays hold now (not the process's RSS: benches measure that)."""

    def mark_live(self, videos: Sequence[str], live: Sequence[bool]) -> None:
        """Which of ``videos`` (just stored or removed) are live from now on (``streams.items.live_videos``)."""
        self.live.mark(self.live.changes(videos, live))

    def live_mask(self, videos: Sequence[str]) -> np.ndarray:
        """bool [n]: which of ``videos`` are live (their watches go to the item refiner)."""
        return self.live.mask(videos)

    def close(self) -> None:
        """Release files and memory; the store is not used after."""

    def get(self, video: str) -> np.ndarray | None:
        """One video's float32 vector, or None (tests, tools; the worker asks :meth:`lookup` per batch)."""
        vectors, found = self.lookup([video])
        return vectors[0] if found[0] else None

    def __contains__(self, video: str) -> bool:
        return self.get(video) is not None


def open_item_store(settings: Settings, topic: str) -> ItemStore:
    """The store the settings name (``DREAMSTREAM_ITEM_STORE``), for ``topic``, sized by ``DREAMSTREAM_ITEM_CACHE_MB``."""
    dtype = np.dtype(settings.item_dtype)
    if settings.item_store == "rocksdb":
        from streams.items.rocks_store import RocksItemStore

        folder = settings.item_store_dir or settings.state_dir / "items"
        return RocksItemStore(folder / topic, topic, dtype, settings.item_cache_mb * MB)
    from streams.items.memory_store import MemoryItemStore

    return MemoryItemStore(dtype, settings.item_cache_mb * MB)
