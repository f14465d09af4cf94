"""The user-state RocksDB's RAM ceiling is the operator's (DREAMSTREAM_STATE_BLOCK_CACHE_MB, _MEMTABLE_MB, _MEMTABLES), not Faust's 2 GiB cache per partition."""
from __future__ import annotations

import shutil
from pathlib import Path

from dreamstream.settings import Settings
from streams.ops.state_store import MB, state_ceiling_bytes, state_table_options


def settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(broker="kafka://127.0.0.1:9", broker_kind="kafka", topic_prefix="st.", model_dir=tmp_path / "models",
                    state_dir=tmp_path / "state", web_port=0, watchdog_s=0, **overrides)


def test_unset_settings_keep_fausts_defaults_and_the_memory_store_takes_none(tmp_path: Path) -> None:
    assert state_table_options(settings(tmp_path, store="rocksdb://")) is None
    assert state_table_options(settings(tmp_path, state_block_cache_mb=64)) is None  # memory:// has no RocksDB
    assert state_ceiling_bytes(None, 2) == 2 * (2048 + 3 * 64) * MB  # what an unbounded worker of 2 partitions may hold


def test_a_worker_opens_its_state_partitions_with_the_set_cache_and_memtables(tmp_path: Path, bundle_dir: Path) -> None:
    """Built as `dreamstream worker` builds it (no broker needed); the partition database RocksDB opens reports the cache."""
    from streams.app import create_app

    s = settings(tmp_path, store="rocksdb://", state_block_cache_mb=48, state_memtable_mb=8, state_memtables=2)
    shutil.copytree(bundle_dir, s.model_dir / bundle_dir.name)
    options = state_table_options(s)
    assert options == {"block_cache_size": 48 * MB, "write_buffer_size": 8 * MB, "max_write_buffer_number": 2}
    assert state_ceiling_bytes(options, 2) == 2 * (48 + 16) * MB
    table = create_app(s).dreamstream_worker.users
    db = table.data._db_for_partition(0)  # Faust opens partition 0's database with the table's options
    try:
        assert int(db.property_value("rocksdb.block-cache-capacity")) == 48 * MB
    finally:
        db.close()
