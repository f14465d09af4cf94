"""The user-state table's RocksDB options: what a worker's state may hold in RAM, per partition it owns.

Faust opens one RocksDB database per table partition with a 2 GiB block
cache and up to three 64 MiB memtables each: a worker owning two partitions
may grow to ~4.4 GB for its state alone, more while a failover gives it
more partitions. That is a ceiling, not a cost per user (the cache fills
with the rows read), but a dense fleet needs the ceiling to be the
operator's number, as the item store's is (docs/scaling.md#user-state-memory).
Each setting left at 0 keeps Faust's default.
"""
from __future__ import annotations

from typing import Any

from dreamstream.settings import Settings

MB = 1 << 20


def state_table_options(settings: Settings) -> dict[str, Any] | None:
    """Faust table ``options`` (its ``RocksDBOptions`` fields) from the settings; None when none is set or the store is not RocksDB."""
    if not settings.store.startswith("rocksdb"):
        return None
    chosen = {"block_cache_size": settings.state_block_cache_mb * MB,
              "write_buffer_size": settings.state_memtable_mb * MB,
              "max_write_buffer_number": settings.state_memtables}
    return {name: value for name, value in chosen.items() if value} or None


def state_ceiling_bytes(options: dict[str, Any] | None, partitions: int) -> int:
    """RAM the user state's RocksDB may hold at most for ``partitions`` owned: (block cache + memtables) each."""
    from faust.stores.rocksdb import RocksDBOptions

    o = RocksDBOptions(**(options or {}))
    return partitions * (o.block_cache_size + o.write_buffer_size * o.max_write_buffer_number)
