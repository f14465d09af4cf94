"""`dreamstream indexer` as a real process: publishes, serves Prometheus metrics, stops cleanly on SIGTERM."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from dreamstream import codec
from dreamstream.broker import free_port
from dreamstream.index.follower import ApplyStats, apply_records
from dreamstream.index.items_publisher import publish_vectors
from dreamstream.index.publish import read_current
from dreamstream.index.sharding import shard_of
from dreamstream.index.store import ItemStore
from dreamstream.topics import create_topics


def test_apply_records_keeps_each_keys_last_record_and_rejects_bad_ones():
    store = ItemStore(shards=2, dim=4)
    v = np.eye(4, dtype=np.float32)
    rec = lambda i, vec: (f"v{i}".encode(), codec.pack(codec.item_vector_record(f"v{i}", vec, "m", 1)))  # noqa: E731
    stats = ApplyStats()
    apply_records(store, [rec(1, v[0]), rec(2, v[1]), (b"v1", None), rec(2, v[2]), (b"v3", b"\xc1junk"), (None, b"x"),
                          rec(4, np.zeros(4)), rec(5, v[3]), (b"v5", None), rec(5, v[0])], stats)
    assert "v1" not in store and "v5" in store and "v2" in store and len(store) == 2
    ids, vecs = store.shard(shard_of("v2", 2))
    np.testing.assert_allclose(vecs[ids.index("v2")], v[2])
    assert stats.rejected == 3 and stats.deletes == 2


def test_indexer_process_metrics_and_sigterm(make_settings, vectors_factory):
    settings = make_settings(index_shards=2, index_interval_s=0.3)
    create_topics(settings)
    x = vectors_factory(2_000, dim=16)
    publish_vectors(settings, [f"v{i}" for i in range(len(x))], x, model="m", progress=False)
    port = free_port()
    env = {**os.environ, "DREAMSTREAM_BROKER": settings.broker, "DREAMSTREAM_TOPIC_PREFIX": settings.topic_prefix,
           "DREAMSTREAM_INDEX_DIR": str(settings.index_dir), "DREAMSTREAM_INDEX_SHARDS": "2", "DREAMSTREAM_INDEX_DIM": "16",
           "DREAMSTREAM_INDEX_INTERVAL_S": "0.3", "DREAMSTREAM_METRICS_PORT": str(port), "DREAMSTREAM_INDEX_THREADS": "1"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dreamstream"), "indexer"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 45
        while read_current(settings.index_dir) is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert read_current(settings.index_dir) is not None, proc.stdout.read() if proc.poll() is not None else "no version"
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "dreamstream_index_items 2000.0" in metrics
        assert "dreamstream_index_versions_total 1.0" in metrics
        assert "dreamstream_index_build_seconds_count 1.0" in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        logs = proc.stdout.read()
        assert "published version=" in logs and "indexer stopping" in logs
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_indexer_refuses_to_start_without_a_width(tmp_path):
    """Issue 27 #2: with no bundle to take the width from and no --index-dim, it says so at once (no first record)."""
    from click.testing import CliRunner

    from dreamstream.cli import main

    result = CliRunner().invoke(main, ["indexer", "--model-dir", str(tmp_path / "models"), "--index-dir",
                                       str(tmp_path / "index"), "--broker", "kafka://127.0.0.1:1"])
    assert result.exit_code == 1 and "--index-dim" in result.output and "no model bundle" in result.output, result.output
