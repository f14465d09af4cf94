"""The RocksDB item store end to end: a real worker on the real broker restarts warm, reading only the topic's tail.

Judged by state: the worker's exact records, its dead letters, and its
/metrics page (``dreamstream_item_records_read_total``: the item-vectors
records the item table read since the process started).
"""
from __future__ import annotations

import pytest

from dreamstream import codec
from dreamstream.bench import harness as h
from dreamstream.broker import free_port
from dreamstream.bundle import load_bundle
from dreamstream.topics import ITEM_VECTORS, create_topics
from e2e_support import assert_exact, counts, install, metric_of, read_dead_letters, wait_until

pytestmark = pytest.mark.slow

READ = "dreamstream_item_records_read_total"


def test_a_rocksdb_worker_restarts_warm_and_reads_only_the_item_records_written_while_it_was_down(
        make_settings, tmp_path, bundle_dir):
    s = make_settings(partitions=2, item_partitions=2, web_port=free_port(), cold_min_positive=0, store="memory://",
                      item_store="rocksdb", item_store_dir=tmp_path / "items", item_cache_mb=1)
    install(bundle_dir, s.model_dir)
    create_topics(s)
    bundle = load_bundle(bundle_dir)
    ids, items = list(bundle.item_ids), dict(zip(bundle.item_ids, bundle.items))
    first, later = ids[:300], ids[300:]
    h.publish_items(s, first, bundle.items[:300], model=bundle.version)
    before = h.synthetic_events(1500, 150, first, seed=11)
    h.produce_sync(s, s.topic("watch-events"), h.event_messages(before))

    w = h.WorkerProcess(s, tmp_path / "worker-0.log").start()
    assert_exact(h.read_records(s, counts(before), timeout_s=90), before, items)
    assert metric_of(s.web_port, READ) == 300, w.log_text()[-3000:]  # a cold start reads the whole catalogue
    assert w.stop() == 0, w.log_text()[-3000:]

    # while it is down: new videos, and one video taken down (a tombstone)
    h.publish_items(s, later, bundle.items[300:], model=bundle.version)
    h.produce_sync(s, s.topic(ITEM_VECTORS), [(codec.key_bytes(first[0]), None)])
    after = h.synthetic_events(1500, 150, [v for v in ids if v != first[0]], seed=12,
                               start_ms=before[-1]["ts"] + 1)  # no time gap: the reference has no decay
    gone = {"user": "u-gone", "video": first[0], "ts": after[-1]["ts"], "watch_ms": 1000, "duration_ms": 2000}
    h.produce_sync(s, s.topic("watch-events"), h.event_messages(after + [gone]))

    w = h.WorkerProcess(s, tmp_path / "worker-1.log").start()
    assert_exact(h.read_records(s, counts(before + after), timeout_s=90), before + after, items)
    wait_until(lambda: metric_of(s.web_port, READ) is not None, 10, "the restarted worker's metrics")
    # warm: only the 100 new vectors and the tombstone were read, not the 300 it already had
    assert metric_of(s.web_port, READ) == len(later) + 1, w.log_text()[-3000:]
    letters = read_dead_letters(s, 1, timeout_s=30)
    assert len(letters) == 1 and "not in the item table" in letters[0]["reason"] and first[0] in letters[0]["reason"]
    assert 0 < (metric_of(s.web_port, "dreamstream_item_store_bytes") or 0) <= 1 << 20
    assert w.stop() == 0, w.log_text()[-3000:]
