"""Hostile records on every input topic of a running worker and indexer: both stay up, valid users stay exact."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dreamstream import codec
from dreamstream.bench import harness as h
from dreamstream.broker import free_port
from dreamstream.bundle import load_bundle
from dreamstream.topics import DLQ, ITEM_FEATURES, ITEM_VECTORS, WATCH_EVENTS, create_topics

pytestmark = pytest.mark.slow


def vector_record(video: str, vector: np.ndarray | bytes) -> tuple[bytes, bytes]:
    raw = vector if isinstance(vector, bytes) else codec.vec_to_bin(np.asarray(vector, np.float32))
    return codec.key_bytes(video), codec.pack({"video": video, "vector": raw, "model": "hostile", "ts": 1})


def read_raw(settings, topic: str, expected: int, timeout_s: float = 30.0) -> list[tuple[bytes | None, bytes]]:
    """Every record of ``topic`` as the broker holds it: (key, value) bytes, to measure what was written."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list = []
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            records += [(r.key, r.value) for batch in consumer.poll(timeout_ms=300).values() for r in batch]
        return records
    finally:
        consumer.close()


def test_hostile_vectors_features_and_huge_arrays_never_stop_the_worker_or_the_indexer(make_settings, tmp_path,
                                                                                      bundle_dir) -> None:
    from e2e_support import (assert_exact, committed_offsets, counts, install, metric_of, read_dead_letters, wait_until,
                             worker_group)

    s = make_settings(partitions=2, web_port=free_port(), cold_min_positive=0, batch_size=512, batch_timeout_s=0.05,
                      index_shards=2, index_interval_s=0.3)
    install(bundle_dir, s.model_dir)
    create_topics(s)
    bundle = load_bundle(bundle_dir)
    items = dict(zip(bundle.item_ids, bundle.items))
    h.produce_sync(s, s.topic(ITEM_VECTORS), [vector_record("stray-2d", np.ones(2))])  # before any real vector
    h.publish_items(s, bundle.item_ids, bundle.items, model=bundle.version)
    d = bundle.items.shape[1]
    victim = bundle.item_ids[0]  # an existing item whose vector hostile records try to replace
    good = np.ones(d, np.float32)
    nan = good.copy()
    nan[1] = np.nan
    hostile_vectors = [vector_record(victim, nan), vector_record(victim, good * 1e20), vector_record(victim, good * 1e-30),
                       vector_record(victim, b""), vector_record(victim, np.ones(d + 3)),
                       vector_record("new-video", np.full(d, np.inf)), (b"junk", b"\xc1\xc1"), (b"nomap", codec.pack([1])),
                       (b"k" * 600_000, vector_record("huge-key", good)[1])]
    worker = h.WorkerProcess(s, tmp_path / "worker.log").start()
    indexer = subprocess.Popen([str(Path(sys.executable).parent / "dreamstream"), "indexer"], env=h.settings_env(s),
                               stdout=open(tmp_path / "indexer.log", "wb"), stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: (metric_of(s.web_port, "dreamstream_model_info", version=bundle.version) or 0) == 1.0, 60,
                   "the worker serving")
        h.produce_sync(s, s.topic(ITEM_VECTORS), hostile_vectors)
        features = [(b"f1", codec.pack({"video": "f1", "text": codec.vec_to_bin(np.full(bundle.manifest.text_dim, np.nan,
                                                                                     np.float32)),
                                        "visual": codec.vec_to_bin(np.zeros(bundle.manifest.visual_dim, np.float32))})),
                    (b"f2", b"\xc1")]
        h.produce_sync(s, s.topic(ITEM_FEATURES), features)
        nils = codec.pack([None] * 1_000_000)  # ~1 MB of nils: bounded work, not a million letters
        unknown = codec.pack([{"user": "u-x", "video": f"nope-{i}", "ts": 1, "watch_ms": 1, "duration_ms": 2}
                              for i in range(18_000)])  # ~1 MB: the most the producer sends in one request
        event = {"user": "u-k", "video": bundle.item_ids[0], "ts": 1, "watch_ms": 1, "duration_ms": 2}
        huge_keys = [(b"k" * 600_000, codec.pack(event)),  # a key over Kafka's 1 MB limit once copied twice
                     (b"u" * 400_000, codec.pack([event] * 1000))]  # one copy of it per event was ~400 MB of letters
        h.produce_sync(s, s.topic(WATCH_EVENTS), [(b"u-x", nils), *huge_keys, (b"u-x", unknown)])
        events = h.synthetic_events(600, 40, bundle.item_ids, seed=5)
        h.produce_sync(s, s.topic(WATCH_EVENTS), h.event_messages(events))

        col = h.read_records(s, counts(events), timeout_s=120)
        assert worker.alive() and indexer.poll() is None, worker.log_text()[-3000:]
        assert_exact(col, events, items)  # the victim kept its real vector: every user is still exact
        refused = sum((metric_of(s.web_port, "dreamstream_item_vectors_refused_total", reason=r) or 0)
                      for r in ("bad-vector", "unreadable"))
        assert refused == len(hostile_vectors) + 1  # and the stray 2-d vector
        letters = read_dead_letters(s, 2 + 2 * 1001 + 2, timeout_s=60)
        labels = [letter["reason"] for letter in letters]
        assert sum("over the 1000-event limit" in r for r in labels) == 2, "one letter for each array's excess"
        assert sum(r.startswith("item-features") for r in labels) == 2
        assert sum("over the 256-byte limit of a user id" in r for r in labels) == 2, "one letter per huge-key message"
        raw = read_raw(s, s.topic(DLQ), len(letters))
        assert len(raw) == len(letters) and all(len(k or b"") + len(v) <= codec.MAX_LETTER_BYTES for k, v in raw)
        assert sorted(codec.unpack(v).get("key_truncated", 0) for _, v in raw)[-2:] == [400_000, 600_000]
        produced = 4 + len(h.event_messages(events))
        wait_until(lambda: sum(c or 0 for c in committed_offsets(s, s.topic(WATCH_EVENTS), worker_group(s)).values())
                   >= produced, 60, "the worker committing past every message, the huge-key ones included")
        from dreamstream.index.publish import read_current
        from dreamstream.index.manifest import read_manifest

        version = wait_until(lambda: read_current(s.index_dir), 60, "an index version")
        time.sleep(2 * s.index_interval_s + 1.0)  # the indexer has polled past the hostile records
        assert indexer.poll() is None, (tmp_path / "indexer.log").read_text()[-3000:]
        manifest = read_manifest(s.index_dir / read_current(s.index_dir))
        assert manifest.items == len(items) and manifest.dim == d, (version, manifest.dim)  # the bundle's width
        from dreamstream.client import Retriever

        hits = Retriever(s.index_dir, follow=False).search_vectors(bundle.items[:20], 1)
        assert [top[0][0] for top in hits] == list(bundle.item_ids[:20]), "the real items are served"

        # hostile shared files the indexer reads (issue 27, finding 6): it keeps running and publishes past them
        served = read_current(s.index_dir)
        (s.index_dir / "HISTORY.json").write_bytes(b"[1, 2]")
        (s.index_dir / "CURRENT").write_bytes(b"\xff\xfe not a version\n")
        h.publish_items(s, ["file-case"], good[None], model=bundle.version)
        from dreamstream.index.manifest import IndexCorruptError

        def republished() -> bool:
            try:
                return indexer.poll() is not None or read_current(s.index_dir) not in (None, served)
            except IndexCorruptError:
                return False

        wait_until(republished, 60, "a version published past a hostile CURRENT and HISTORY.json")
        assert indexer.poll() is None, (tmp_path / "indexer.log").read_text()[-3000:]
        assert read_manifest(s.index_dir / read_current(s.index_dir)).items == len(items) + 1
    finally:
        worker.stop()
        if indexer.poll() is None:
            indexer.send_signal(signal.SIGTERM)
            indexer.wait(20)
