"""The live refinement through a crash: a worker SIGKILLed while watches of live videos flow, then restarted; every
watch counts once in each new video's published vector (the worker re-sends a replayed batch's watches, the
refiner drops them by their watch-event position)."""
from __future__ import annotations

import threading
from collections import defaultdict

import numpy as np
import pytest

from dreamstream import codec
from dreamstream.bench import harness as h
from dreamstream.broker import free_port
from dreamstream.dreamumm_ref import refined_vector
from dreamstream.topics import ITEM_VECTORS, ITEM_WATCHERS, create_topics

pytestmark = pytest.mark.slow


def test_a_sigkill_mid_stream_counts_every_watch_of_a_live_video_once(make_settings, tmp_path, bundle_dir) -> None:
    from e2e_support import install, metric_of, wait_until

    from dreamstream.bundle import load_bundle

    s = make_settings(partitions=4, web_port=free_port(), cold_min_positive=0, batch_size=512, batch_timeout_s=0.05,
                      store="memory://", live_publish_s=0.3)
    install(bundle_dir, s.model_dir)
    create_topics(s)
    bundle = load_bundle(bundle_dir)
    space = bundle.manifest.item_space
    h.publish_items(s, bundle.item_ids, bundle.items, model=bundle.version, live_share=0.25, space=space)
    events = h.synthetic_events(2500, 200, list(bundle.item_ids), seed=9)
    producer = threading.Thread(target=h.produce_sync, args=(s, s.topic("watch-events"), h.event_messages(events)),
                                kwargs={"rate": 150})  # ~17 s of traffic
    producer.start()
    first = h.WorkerProcess(s, tmp_path / "worker-0.log").start()
    second = None
    try:
        wait_until(lambda: (metric_of(s.web_port, "dreamstream_live_watchers_total") or 0) >= 50, 60,
                   "the first worker reports watches of live videos", detail=lambda: first.log_text()[-3000:])
        mid_stream = producer.is_alive()
        first.kill()  # SIGKILL: no flush, no commit; its last batches' watches are sent again by the next worker
        second = h.WorkerProcess(s, tmp_path / "worker-1.log").start()
        producer.join()
        h.read_records(s, {u: n for u, n in _counts(events).items()}, timeout_s=90)
        watches, towers = _watchers(s)
        live = set(towers)
        seen: set[str] = set()
        expected_reports = 0
        for e in events:  # a watch is reported when its video is live and its user watched something before
            expected_reports += e["video"] in live and e["user"] in seen
            seen.add(e["user"])
        assert mid_stream and sum(len(w) for w in watches.values()) == expected_reports, "a watch reported twice or lost"
        expected = {v: refined_vector(towers[v], bundle.mean_user, sum(w * u for w, u in watches[v].values()),
                                      s.live_beta0, s.live_gamma) for v in watches}

        def all_refined() -> bool:
            newest = _newest_vectors(s)
            return all(np.abs(newest[v] - want).max() < 1e-4 for v, want in expected.items())

        wait_until(all_refined, 60, f"the {len(expected)} watched live videos published with each watch counted once",
                   detail=lambda: second.log_text()[-3000:])
        assert second.alive(), second.log_text()[-3000:]
    finally:
        first.kill()
        if second is not None:
            second.stop()


def _counts(events) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for e in events:
        out[e["user"]] += 1
    return out


def _watchers(s) -> tuple[dict[str, dict[tuple, tuple[float, np.ndarray]]], dict[str, np.ndarray]]:
    """item-watchers as the refiner must apply it: each video's watches by source position, the first record of each."""
    from e2e_support import read_topic

    watches: dict[str, dict[tuple, tuple[float, np.ndarray]]] = defaultdict(dict)
    towers: dict[str, np.ndarray] = {}
    for _, _, value in read_topic(s, s.topic(ITEM_WATCHERS)):
        if value["kind"] == "tower":
            towers[value["video"]] = codec.bin_to_vec(value["vector"])
        else:
            # the first record of a position counts: a re-sent one may carry a slightly different vector (its
            # user's replay read the item vectors of now, and live videos in the history were refined meanwhile)
            watches[value["video"]].setdefault(tuple(value["src"]),
                                               (value["weight"], codec.bin_to_vec(value["user"]).astype(float)))
    return watches, towers


def _newest_vectors(s) -> dict[str, np.ndarray]:
    from e2e_support import read_topic

    return {v["video"]: codec.bin_to_vec(v["vector"]) for _, _, v in read_topic(s, s.topic(ITEM_VECTORS)) if v}


