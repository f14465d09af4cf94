"""The RocksDB item store: every vector on local disk, hot videos in a bounded cache, offsets kept with the vectors.

The Kafka Streams GlobalKTable pattern: each worker keeps a full local copy
of the compacted ``item-vectors`` topic in RocksDB (through ``rocksdict``,
already the Faust table driver) and stores, in the same database, the
offset up to which it applied each partition. A restart with the same
folder (a pod's volume) reads only the records written since, instead of
the whole catalogue. RAM is bounded by the operator: a
:class:`~streams.items.compact_table.CompactTable` of the hot videos
(``DREAMSTREAM_ITEM_CACHE_MB``, CLOCK eviction; with Zipf-like popularity a
cache of a tenth of the catalogue serves most lookups) plus RocksDB's own
small, fixed buffers (memtables, a block cache holding index and filter
blocks; :data:`BLOCK_CACHE_BYTES`, :data:`WRITE_BUFFER_BYTES`).

Layout (raw bytes keys): ``v<utf-8 id>`` -> the vector in the store's dtype; ``r<utf-8 id>`` -> b"" for a
live video (``streams.items.live_videos``, kept across restarts like the vectors);
``\\x00meta`` -> JSON {topic, dtype, dim, version}; ``\\x00offsets`` -> JSON
{partition: next offset}. A folder written for another topic, dtype or
width is wiped and rebuilt from the topic (logged), never misread.
"""
from __future__ import annotations

import itertools
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from streams.items.compact_table import CompactTable, row_bytes
from streams.items.live_videos import LiveVideos
from streams.items.store import MB, ItemStore, LookupCounts

log = logging.getLogger(__name__)

META, OFFSETS, PREFIX, LIVE = b"\x00meta", b"\x00offsets", b"v", b"r"
LAYOUT = 1
# Data, index and filter blocks share one bounded cache, so the index of a larger catalogue never grows RAM.
# Measured (bench-items, 10M float16 videos): with 16 MiB the ~20 MiB of index and filter blocks of 4 KiB
# data blocks did not fit, and every cache miss of the hot-video cache reloaded them (~150 us a miss).
BLOCK_CACHE_BYTES = 64 * MB
BLOCK_BYTES = 16 * 1024  # 4x fewer index entries than RocksDB's 4 KiB; a point read copies 16 KiB from the page cache
WRITE_BUFFER_BYTES = 16 * MB  # per memtable, at most two


def _options():
    """The store's RocksDB options: bounded memory whatever the catalogue, no compression (vectors do not compress)."""
    from rocksdict import BlockBasedOptions, Cache, DBCompressionType, Options

    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_write_buffer_size(WRITE_BUFFER_BYTES)
    opts.set_max_write_buffer_number(2)
    opts.set_compression_type(DBCompressionType.none())
    opts.set_max_open_files(256)
    table = BlockBasedOptions()
    table.set_block_cache(Cache(BLOCK_CACHE_BYTES))
    table.set_cache_index_and_filter_blocks(True)
    table.set_pin_l0_filter_and_index_blocks_in_cache(True)
    table.set_block_size(BLOCK_BYTES)
    table.set_bloom_filter(10, False)  # an unknown video is answered without a data block read
    opts.set_block_based_table_factory(table)
    opts.set_optimize_filters_for_hits(True)  # no filters on the last level (most keys, and nearly every lookup hits)
    return opts


class RocksItemStore(ItemStore):
    """Vectors in RocksDB at ``folder``; a CLOCK cache of at most ``cache_bytes`` of them in RAM."""

    def __init__(self, folder: Path | str, topic: str, dtype: np.dtype | str = np.float32,
                 cache_bytes: int = 256 * MB) -> None:
        from rocksdict import Rdict

        self.folder, self.topic = Path(folder), topic
        self.dtype, self.cache_bytes = np.dtype(dtype), cache_bytes
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        self.db = Rdict(str(self.folder), _options())
        self.meta = self._read_json(META) or {}
        if self.meta and (self.meta.get("topic"), self.meta.get("dtype"), self.meta.get("version")) != (
                topic, self.dtype.name, LAYOUT):
            log.warning("item store %s was written for %s; wiping it and reading the topic again", self.folder, self.meta)
            self.db.close()
            shutil.rmtree(self.folder)
            self.db = Rdict(str(self.folder), _options())
            self.meta = {}
        self.cache: CompactTable | None = None
        self.lookups = LookupCounts()
        self.live = LiveVideos()
        self.live.mark(zip(self._stored_live(), itertools.repeat(True)))
        self.applied: dict[int, int] = {int(p): int(o) for p, o in (self._read_json(OFFSETS) or {}).items()}

    def _stored_live(self) -> Iterator[str]:
        """The ids of the live videos stored by an earlier run."""
        for key in self.db.keys(from_key=LIVE):
            if not key.startswith(LIVE):
                return
            yield key[1:].decode("utf-8", "surrogatepass")

    def mark_live(self, videos: Sequence[str], live: Sequence[bool]) -> None:
        from rocksdict import WriteBatch

        changes = self.live.changes(videos, live)
        if not changes:
            return
        batch = WriteBatch(raw_mode=True)
        for video, flag in changes:
            key = LIVE + video.encode("utf-8", "surrogatepass")
            if flag:
                batch.put(key, b"")
            else:
                batch.delete(key)
        self.db.write(batch)
        self.live.mark(changes)

    def _read_json(self, key: bytes) -> dict | None:
        raw = self.db.get(key)
        return json.loads(raw) if raw is not None else None

    @property
    def dim(self) -> int | None:
        return self.meta.get("dim")

    def _cache(self) -> CompactTable | None:
        if self.cache is None and self.dim is not None:
            rows = self.cache_bytes // row_bytes(self.dim, self.dtype)
            self.cache = CompactTable(self.dim, self.dtype, max(1, rows))
        return self.cache

    def lookup(self, videos: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        n, t0 = len(videos), time.perf_counter()
        cache = self._cache()
        out = np.zeros((n, self.dim or 0), np.float32)
        if cache is None:
            self.lookups.count(0, 0, n)
            return out, np.zeros(n, bool)
        rows = cache.find(videos)
        cache.gather(rows, out)
        found = rows >= 0
        miss = np.flatnonzero(~found)
        read = self._read_misses(videos, miss, out, found) if len(miss) else 0
        self.lookups.count(n - len(miss), read, n, t0)
        return out, found

    def _read_misses(self, videos: Sequence[str], miss: np.ndarray, out: np.ndarray, found: np.ndarray) -> int:
        """Cache misses from RocksDB in one multi-get; what it finds is written to ``out`` and cached (returns how many)."""
        names = [videos[i] for i in miss]
        values = self.db.get([PREFIX + v.encode("utf-8", "surrogatepass") for v in names])
        there = [j for j, value in enumerate(values) if value is not None]
        if not there:
            return 0
        vectors = np.frombuffer(b"".join([values[j] for j in there]), self.dtype).reshape(len(there), -1)
        at = miss[there]
        out[at] = vectors
        found[at] = True
        self.cache.put_rows([names[j] for j in there], vectors, evict=True)
        return len(there)

    def put(self, videos: Sequence[str], vectors: np.ndarray) -> np.ndarray:
        from rocksdict import WriteBatch

        if not len(videos):
            return np.zeros(0, bool)
        if self.dim is None:
            self.meta = {"topic": self.topic, "dtype": self.dtype.name, "dim": int(vectors.shape[1]), "version": LAYOUT}
            self.db.put(META, json.dumps(self.meta).encode())
        held = np.ascontiguousarray(vectors, self.dtype)
        batch = WriteBatch(raw_mode=True)
        for video, row in zip(videos, held):
            batch.put(PREFIX + video.encode("utf-8", "surrogatepass"), row.tobytes())
        self.db.write(batch)
        self._cache().refresh(videos, held)
        return np.ones(len(videos), bool)

    def delete(self, videos: Sequence[str]) -> None:
        from rocksdict import WriteBatch

        if not len(videos):
            return
        batch = WriteBatch(raw_mode=True)
        for video in videos:
            batch.delete(PREFIX + video.encode("utf-8", "surrogatepass"))
        self.db.write(batch)
        if self.cache is not None:
            self.cache.delete(videos)

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        for key, value in self.db.items(from_key=PREFIX):
            if not key.startswith(PREFIX):
                return
            yield key[1:].decode("utf-8", "surrogatepass"), np.frombuffer(value, self.dtype).astype(np.float32)

    def __len__(self) -> int:
        """Estimated by RocksDB (exact after a compaction; counting would cost a read per put)."""
        bookkeeping = (self.dim is not None) + bool(self.applied) + len(self.live)  # meta, offsets, live marks
        return max(0, int(self.db.property_int_value("rocksdb.estimate-num-keys") or 0) - bookkeeping)

    def offsets(self) -> dict[int, int]:
        return dict(self.applied)

    def commit(self, offsets: dict[int, int]) -> None:
        if not offsets:
            return
        self.applied.update(offsets)
        self.db.put(OFFSETS, json.dumps(self.applied).encode())

    def resident_bytes(self) -> int:
        """The cache's arrays; RocksDB's buffers are bounded by the options (``BLOCK_CACHE_BYTES``...) and not counted."""
        return self.cache.resident_bytes if self.cache is not None else 0

    def close(self) -> None:
        self.db.close()
