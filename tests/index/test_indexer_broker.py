"""The indexer against the private broker: publish-items -> item-vectors -> versions -> Retriever; retrieve CLI."""
from __future__ import annotations

import json
import time

import numpy as np
from click.testing import CliRunner

from dreamstream import codec
from dreamstream.cli import main
from dreamstream.client import Retriever, latest_user_record, user_partition
from dreamstream.index.items_publisher import publish_tombstones, publish_vectors
from dreamstream.index.publish import read_current
from dreamstream.index.service import Indexer
from dreamstream.topics import INDEX_VERSIONS, USER_EMBEDDINGS, create_topics


def drive(indexer: Indexer, until, timeout_s: float = 60.0):
    """Poll and build like `Indexer.run` until ``until()`` holds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        indexer.poll(0.2)
        if indexer.due(time.monotonic()):
            indexer.build()
        if until():
            return
    raise AssertionError("indexer did not reach the expected state in time")


def version_ids(index_dir) -> set[str]:
    name = read_current(index_dir)
    manifest = json.loads((index_dir / name / "manifest.json").read_text())
    ids: set[str] = set()
    for shard in manifest["shards"]:
        ids |= set(json.loads((index_dir / name / shard["ids"]).read_text()))
    return ids


def self_hits(retriever: Retriever, ids: list[str], vectors: np.ndarray) -> float:
    top = retriever.search_vectors(vectors, 1)
    return float(np.mean([bool(hits) and hits[0][0] == i for hits, i in zip(top, ids)]))


def test_indexer_follows_items_updates_and_tombstones(make_settings, vectors_factory):
    settings = make_settings(index_shards=4, index_interval_s=0.5, index_grace_s=0.0, index_dim=64)
    create_topics(settings)
    n = 20_000
    x = vectors_factory(n, dim=64, clusters=300, noise=1.0, seed=1)
    ids = [f"video-{i}" for i in range(n)]
    publish_vectors(settings, ids, x, model="m1", progress=False)

    indexer = Indexer(settings)
    try:
        drive(indexer, lambda: read_current(settings.index_dir) is not None)
        first = read_current(settings.index_dir)
        assert version_ids(settings.index_dir) == set(ids)
        manifest = json.loads((settings.index_dir / first / "manifest.json").read_text())
        assert sum(1 for s in manifest["shards"] if s["count"]) >= 2 and manifest["items"] == n
        retriever = Retriever(settings.index_dir, follow=False)
        sample = np.random.default_rng(0).choice(n, 2_000, replace=False)
        assert self_hits(retriever, [ids[i] for i in sample], x[sample]) >= 0.98

        rng = np.random.default_rng(2)
        updated = rng.choice(n, 500, replace=False)
        new_vectors = vectors_factory(500, dim=64, clusters=50, noise=1.0, seed=9)
        publish_vectors(settings, [ids[i] for i in updated], new_vectors, model="m2", progress=False)
        removed = [ids[i] for i in rng.choice(np.setdiff1d(np.arange(n), updated), 100, replace=False)]
        publish_tombstones(settings, removed)

        expected = set(ids) - set(removed)
        drive(indexer, lambda: read_current(settings.index_dir) != first and version_ids(settings.index_dir) == expected)
        retriever.refresh()
        assert retriever.version.name != first
        assert self_hits(retriever, [ids[i] for i in updated], new_vectors) >= 0.98
        assert all(hit[0] not in set(removed) for hits in retriever.search_vectors(x[:50], 20) for hit in hits)
        assert not (settings.index_dir / first).exists()  # grace 0: the retired version is pruned
    finally:
        indexer.close()

    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None, enable_auto_commit=False)
    tp = TopicPartition(settings.topic(INDEX_VERSIONS), 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    announced = [codec.unpack(r.value) for recs in consumer.poll(timeout_ms=3000).values() for r in recs]
    consumer.close()
    assert announced and announced[-1]["version"] == read_current(settings.index_dir)
    assert announced[-1]["items"] == n - 100 and announced[-1]["shards"] == 4


def test_publish_items_and_retrieve_commands(make_settings, vectors_factory, tmp_path):
    settings = make_settings(index_shards=2, index_interval_s=0.2, index_dim=16)
    env = {"DREAMSTREAM_BROKER": settings.broker, "DREAMSTREAM_TOPIC_PREFIX": settings.topic_prefix,
           "DREAMSTREAM_INDEX_DIR": str(settings.index_dir), "DREAMSTREAM_MODEL_DIR": str(settings.model_dir)}
    bundle = settings.model_dir / "20240101-000000"
    bundle.mkdir(parents=True)
    x = vectors_factory(300, dim=16, seed=4)
    ids = [str(1000 + i) for i in range(300)]
    np.save(bundle / "items.npy", x)
    (bundle / "item_ids.json").write_text(json.dumps(ids))
    (bundle / "manifest.json").write_text(json.dumps({"version": "20240101-000000"}))
    runner = CliRunner()
    done = runner.invoke(main, ["publish-items"], env=env)  # newest bundle in --model-dir
    assert done.exit_code == 0, done.output
    assert "published 300 items" in done.output
    done = runner.invoke(main, ["publish-items", "--delete", "1000", "--delete", "1001"], env=env)
    assert done.exit_code == 0 and "2 tombstones" in done.output, done.output

    indexer = Indexer(settings)
    try:
        drive(indexer, lambda: read_current(settings.index_dir) is not None and len(version_ids(settings.index_dir)) == 298)
    finally:
        indexer.close()

    # A user record keyed like the worker's: it lands on the murmur2 partition of the key.
    from kafka import KafkaProducer

    user = "user-42"
    interests = np.vstack([x[10], x[20], x[30]])
    record = {"user": user, "seq": 7, "ts": 1, "model": "m", "vector": codec.vec_to_bin(x[5]),
              "interests": codec.vec_to_bin(interests), "interest_ids": [0, 1, 2], "interest_weights": [0.5, 0.3, 0.2],
              "cold": False}
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    producer.send(settings.topic(USER_EMBEDDINGS), key=user.encode(), value=codec.pack({**record, "seq": 6}))
    meta = producer.send(settings.topic(USER_EMBEDDINGS), key=user.encode(), value=codec.pack(record)).get(10)
    producer.close()
    assert meta.partition == user_partition(user, settings.partitions)
    assert latest_user_record(settings, user)["seq"] == 7

    with Retriever(settings.index_dir, follow=False) as retriever:
        results = retriever.search(record, 20, exclude=["1005"])
    found = [v for v, _ in results]
    assert len(found) == 20 == len(set(found)) and "1005" not in found
    # the served ranking (dreamstream.blend): user score + 0.3 x the best interest's, over the live catalogue
    live = [i for i in range(2, 300) if ids[i] != "1005"]  # 1000 and 1001 were deleted, 1005 is excluded
    blend = x[live] @ x[5] + 0.3 * (x[live] @ interests.T).max(axis=1)
    want = [ids[live[i]] for i in np.argsort(-blend, kind="stable")[:20]]
    assert found == want
    np.testing.assert_allclose([s for _, s in results], np.sort(blend)[::-1][:20], atol=1e-5)

    done = runner.invoke(main, ["retrieve", "--user", user, "-k", "5"], env=env)
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    assert "seq 7" in lines[0] and lines[1].split() == ["rank", "video", "score"] and len(lines) == 7
    assert lines[2].split()[1] == "1005"  # the user vector's own item scores 1.0
