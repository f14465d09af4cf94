"""End to end through Milvus: items on the broker -> `dreamstream indexer --index-backend milvus` -> alias -> client.

Items are published on the private broker, the indexer (a real process)
writes each version as a collection and moves the namespace's alias; a
second namespace's indexer does the same; SERVING switches to it and
`dreamstream rollout rollback` switches back. Every search along the way is
checked against the exact blend over the catalogue as it is at that moment.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from dreamstream.cli import main
from dreamstream.client import Retriever
from dreamstream.index.backend import index_backend
from dreamstream.index.items_publisher import publish_tombstones, publish_vectors
from dreamstream.index.service import Indexer
from dreamstream.serving import read_serving, switch_serving
from dreamstream.topics import create_topics
from test_backends import brute_force, user


def wait_for(check, timeout_s: float = 60.0, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        assert proc is None or proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    raise AssertionError("timed out")


def assert_exact(retriever: Retriever, ids: list[str], vectors: np.ndarray, space: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(4):
        record = {**user(vectors, rng), "space": space}
        watched = set(brute_force(ids, vectors, record, 6, set())[::3])
        got = [i for i, _ in retriever.search(record, 15, exclude=watched)]
        assert got == brute_force(ids, vectors, record, 15, watched)


def test_versions_switch_and_roll_back_through_milvus_with_exact_searches(make_settings, milvus_uri, vectors_factory):
    settings = make_settings(index_backend="milvus", milvus_uri=milvus_uri, index_shards=2, index_interval_s=0.3, index_dim=16)
    create_topics(settings)
    n = 1500
    x = vectors_factory(n, dim=16, clusters=30)
    ids = [f"a{i}" for i in range(n)]
    publish_vectors(settings, ids, x, model="m1", progress=False)
    env = {**os.environ, "DREAMSTREAM_BROKER": settings.broker, "DREAMSTREAM_TOPIC_PREFIX": settings.topic_prefix,
           "DREAMSTREAM_INDEX_DIR": str(settings.index_dir), "DREAMSTREAM_INDEX_SHARDS": "2",
           "DREAMSTREAM_INDEX_DIM": "16", "DREAMSTREAM_INDEX_INTERVAL_S": "0.3", "DREAMSTREAM_INDEX_BACKEND": "milvus", "DREAMSTREAM_MILVUS_URI": milvus_uri,
           "DREAMSTREAM_METRICS_PORT": "0", "DREAMSTREAM_INDEX_THREADS": "1"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dreamstream"), "indexer"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    backend = index_backend(settings)
    try:
        first = wait_for(lambda: backend.current(""), proc=proc)
        assert not (settings.index_dir / first).exists(), "the version lives in Milvus, not in the index dir"
        retriever = Retriever(settings.index_dir, follow=False, backend=backend)
        assert retriever.version.name == first and retriever.version.manifest.items == n
        assert_exact(retriever, ids, x, "", seed=1)

        # a new version: 300 items move, 50 go; the reader keeps the old one until it refreshes
        rng = np.random.default_rng(2)
        moved = rng.choice(n, 300, replace=False)
        x2 = x.copy()
        x2[moved] = vectors_factory(300, dim=16, clusters=5, seed=7)
        publish_vectors(settings, [ids[i] for i in moved], x2[moved], model="m1", progress=False)
        gone = {ids[i] for i in rng.choice(np.setdiff1d(np.arange(n), moved), 50, replace=False)}
        publish_tombstones(settings, sorted(gone))
        keep = [i for i in range(n) if ids[i] not in gone]
        live_ids, live = [ids[i] for i in keep], x2[keep]
        wait_for(lambda: backend.current("") != first and backend.load("").manifest.items == len(keep), proc=proc)
        assert retriever.version.name == first
        retriever.refresh()
        assert retriever.version.name == backend.current("")
        assert_exact(retriever, live_ids, live, "", seed=3)

        # a second namespace (another item space), switched to and rolled back
        ns = settings.in_namespace("v2").model_copy(update={"index_dim": 8})
        create_topics(ns)
        y = vectors_factory(800, dim=8, seed=11)
        b_ids = [f"b{i}" for i in range(len(y))]
        publish_vectors(ns, b_ids, y, model="m2", progress=False)
        indexer = Indexer(ns)
        try:
            wait_for(lambda: indexer.poll(0.2) or (indexer.due(time.monotonic()) and indexer.build().published))
        finally:
            indexer.close()
        switch_serving(settings.index_dir, "v2")
        assert retriever.refresh() and retriever.serving.namespace == "v2"
        assert_exact(retriever, b_ids, y, "v2", seed=4)
        assert_exact(retriever, live_ids, live, "", seed=5)  # records read before the switch: their own space

        flags = ["--index-dir", str(settings.index_dir), "--broker", settings.broker, "--topic-prefix",
                 settings.topic_prefix, "--index-backend", "milvus", "--milvus-uri", milvus_uri]
        status = CliRunner().invoke(main, ["rollout", "status", *flags])
        assert status.exit_code == 0, status.output
        assert backend.current("v2") in status.output and backend.current("") in status.output
        back = CliRunner().invoke(main, ["rollout", "rollback", *flags])
        assert back.exit_code == 0, back.output
        assert read_serving(settings.index_dir).namespace == ""
        assert retriever.refresh() and retriever.version.name == backend.current("")
        assert_exact(retriever, live_ids, live, "", seed=6)
        retriever.close()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert "published milvus version=" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
