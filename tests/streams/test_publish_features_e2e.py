"""A new video published by `dreamstream publish-features` flows through the worker's item tower, item-vectors and
the indexer, and the client retrieves it for a user who watched similar videos (and not for one who did not)."""
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
from dreamstream.topics import WATCH_EVENTS, create_topics

pytestmark = pytest.mark.slow

CLUSTERS, PER_CLUSTER = 6, 10


def content_dataset(folder: Path, text_dim: int, visual_dim: int) -> tuple[list[str], dict[int, list[str]]]:
    """A RecBole folder: 60 catalogue videos in 6 content clusters (text features near a cluster centre) and
    ``new-1``, a video of cluster 0 nobody has watched. Returns (catalogue ids, ids by cluster)."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((CLUSTERS, text_dim)).astype(np.float32)
    ids, text, by_cluster = [], [], {}
    for c in range(CLUSTERS):
        for j in range(PER_CLUSTER):
            ids.append(f"c{c}-{j}")
            text.append(centres[c] + 0.15 * rng.standard_normal(text_dim))
            by_cluster.setdefault(c, []).append(ids[-1])
    every = ids + ["new-1"]
    text.append(centres[0] + 0.15 * rng.standard_normal(text_dim))
    folder.mkdir(parents=True)
    (folder / "content.item").write_text("item_id:token\n" + "".join(f"{i}\n" for i in every))
    (folder / "content.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n"
                                          + "".join(f"seed\t{i}\t{n}\n" for n, i in enumerate(ids)))
    np.save(folder / "text_feat.npy", np.stack(text).astype(np.float32))
    np.save(folder / "image_feat.npy", np.zeros((len(every), visual_dim), np.float32))
    return ids, by_cluster


def content_stack(make_settings, tmp_path: Path, bundle_dir: Path, **overrides):
    """Settings (2 partitions, small batches, ``overrides``), the bundle installed, topics, the content dataset:
    (settings, data folder, catalogue ids, ids by cluster)."""
    from e2e_support import install, manifest

    s = make_settings(partitions=2, web_port=free_port(), cold_min_positive=0, batch_size=64, batch_timeout_s=0.05,
                      **overrides)
    install(bundle_dir, s.model_dir)
    create_topics(s)
    m = manifest(bundle_dir)
    data = tmp_path / "content"
    return (s, data, *content_dataset(data, int(m["text_dim"]), int(m["visual_dim"])))


def publish_features(s, data: Path, items: list[str]) -> None:
    cli = str(Path(sys.executable).parent / "dreamstream")
    done = subprocess.run([cli, "publish-features", "--data", str(data), "--items", ",".join(items)],
                          env=h.settings_env(s), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"published the features of {len(items)} items" in done.stdout


def test_a_new_video_published_as_features_is_retrieved_by_a_user_who_watched_similar_ones(make_settings, tmp_path,
                                                                                           bundle_dir) -> None:
    from e2e_support import wait_until

    from dreamstream.client import Retriever, latest_user_record
    from dreamstream.index.manifest import read_manifest
    from dreamstream.index.publish import read_current

    s, data, catalogue, by_cluster = content_stack(make_settings, tmp_path, bundle_dir, index_shards=1,
                                                   index_interval_s=0.3)

    def indexed() -> int:
        current = read_current(s.index_dir)
        return read_manifest(s.index_dir / current).items if current else 0

    worker = h.WorkerProcess(s, tmp_path / "worker.log").start()
    indexer = subprocess.Popen([str(Path(sys.executable).parent / "dreamstream"), "indexer"], env=h.settings_env(s),
                               stdout=open(tmp_path / "indexer.log", "wb"), stderr=subprocess.STDOUT)
    try:
        publish_features(s, data, catalogue)  # the catalogue: embedded by the worker's tower, indexed
        wait_until(lambda: indexed() == len(catalogue), 120, "the catalogue in an index version")
        now = int(time.time() * 1000)
        watched = {"u-similar": by_cluster[0][:8], "u-other": by_cluster[3][:8]}  # 2 of each cluster left unwatched
        events = [{"user": u, "video": v, "ts": now + n, "watch_ms": 30_000, "duration_ms": 30_000}
                  for u, videos in watched.items() for n, v in enumerate(videos)]
        h.produce_sync(s, s.topic(WATCH_EVENTS), h.event_messages(events))
        h.read_records(s, {u: len(v) for u, v in watched.items()}, timeout_s=90)

        publish_features(s, data, ["new-1"])  # a new video: features only, no interaction, no retraining
        wait_until(lambda: indexed() == len(catalogue) + 1, 120, "the new video in an index version")
        assert worker.alive() and indexer.poll() is None, worker.log_text()[-3000:]
        with Retriever(s.index_dir, follow=False) as retriever:
            found = {u: [i for i, _ in retriever.search(latest_user_record(s, u), 3, exclude=watched[u])]
                     for u in watched}
        # the new video ranks with the unwatched videos of the cluster the user watched, and nowhere near the other
        assert set(found["u-similar"]) == {"new-1", *by_cluster[0][8:]}, found
        assert set(found["u-other"][:2]) == set(by_cluster[3][8:]) and "new-1" not in found["u-other"], found
    finally:
        worker.stop()
        if indexer.poll() is None:
            indexer.send_signal(signal.SIGTERM)
            indexer.wait(20)


def test_a_new_video_is_refined_by_its_live_watchers_and_republished(make_settings, tmp_path, bundle_dir) -> None:
    """The live path end to end: the tower's first vector (live), each watch reported with the watcher's vector just
    before it, and the refiner's published vector = normalize(tower - beta0 m_user + gamma sum w u)."""
    from e2e_support import read_topic, wait_until

    from dreamstream.bundle import load_bundle
    from dreamstream.dreamumm_ref import refined_vector
    from dreamstream.topics import ITEM_VECTORS, ITEM_WATCHERS

    s, data, catalogue, by_cluster = content_stack(make_settings, tmp_path, bundle_dir, live_publish_s=0.3,
                                                   live_gamma=0.5)
    bundle = load_bundle(bundle_dir)

    def newest(video: str) -> dict | None:
        found = [v for _, _, v in read_topic(s, s.topic(ITEM_VECTORS)) if v is not None and v["video"] == video]
        return found[-1] if found else None

    worker = h.WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        publish_features(s, data, catalogue[:PER_CLUSTER * 2] + ["new-1"])
        wait_until(lambda: newest("new-1") is not None, 120, "new-1's first vector on item-vectors")
        first = newest("new-1")
        tower = next(v for _, _, v in read_topic(s, s.topic(ITEM_WATCHERS)) if v["kind"] == "tower" and v["video"] == "new-1")
        tower_vec = codec.bin_to_vec(tower["vector"])
        assert first["live"] is True
        np.testing.assert_allclose(codec.bin_to_vec(first["vector"]), refined_vector(tower_vec, bundle.mean_user, 0 * tower_vec,
                                                                                     s.live_beta0, 0.5), atol=1e-5)
        now = int(time.time() * 1000)
        history = {"u1": by_cluster[1][:5], "u2": by_cluster[1][3:8], "u3": by_cluster[0][:4]}
        events = [{"user": u, "video": v, "ts": now + n, "watch_ms": 30_000, "duration_ms": 30_000}
                  for u, videos in history.items() for n, v in enumerate(videos)]
        h.produce_sync(s, s.topic(WATCH_EVENTS), h.event_messages(events))
        before = h.read_records(s, {u: len(v) for u, v in history.items()}, timeout_s=90).latest
        watches = [{"user": u, "video": "new-1", "ts": now + 100, "watch_ms": ms, "duration_ms": 30_000}
                   for u, ms in (("u1", 30_000), ("u2", 15_000), ("u3", 3_000))]  # the last one a quick skip
        h.produce_sync(s, s.topic(WATCH_EVENTS), h.event_messages(watches))
        weights = s.engagement.weight([w["watch_ms"] for w in watches], [w["duration_ms"] for w in watches])
        total = sum(w * codec.bin_to_vec(before[e["user"]]["vector"]) for w, e in zip(weights, watches))
        expected = refined_vector(tower_vec, bundle.mean_user, total, s.live_beta0, 0.5)

        def refined() -> bool:
            rec = newest("new-1")
            return rec is not None and np.abs(codec.bin_to_vec(rec["vector"]) - expected).max() < 2e-3

        wait_until(refined, 60, "new-1's vector refined by its three watchers")
        assert newest("new-1")["live"] is True and worker.alive(), worker.log_text()[-3000:]
        pull = codec.bin_to_vec(before["u1"]["vector"]) + codec.bin_to_vec(before["u2"]["vector"])
        assert float(expected @ pull) > float(codec.bin_to_vec(first["vector"]) @ pull), "not pulled towards the watchers"
    finally:
        worker.stop()
