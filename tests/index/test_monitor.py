"""`dreamstream monitor`: live HitRate per model namespace equals the offline prequential rule, and gates a rollout.

The pure core is replayed against a simulated worker (one record per event,
the way the worker publishes them) with the two streams interleaved as a
live reader sees them (records a little ahead of or behind the events), and
compared with an offline reference computed independently with numpy: for
each sampled positive event, the top-k of (the user's vector after their
previous event) . (item vectors), without masking (the monitor's rule).
"""
from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from dreamstream import codec
from dreamstream.broker import free_port
from dreamstream.index.builder import BuildParams, build_version
from dreamstream.index.publish import install
from dreamstream.index.store import ItemStore
from dreamstream.monitor import (HitWindow, Monitor, MonitorStat, WatchEvent, gate, held_record, read_monitor,
                                 sampled, to_score, write_monitor)
from dreamstream.monitor_service import MonitorMetrics, MonitorOptions, MonitorService, SpaceIndexes
from streams.domain.records import user_record

K = 20
N_ITEMS, N_USERS, N_EVENTS = 240, 25, 900
SKIP_RATIO = 0.2


def catalogue(dim: int, seed: int, clusters: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Unit item vectors around ``clusters`` topics, and each item's topic."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    topic = np.arange(N_ITEMS) % clusters
    x = centres[topic] + 0.6 * rng.standard_normal((N_ITEMS, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), topic


def publish_space(index_dir: Path, namespace: str, vectors: np.ndarray) -> None:
    store = ItemStore(shards=2)
    store.put_many([f"v{i}" for i in range(len(vectors))], vectors)
    folder = index_dir / namespace if namespace else index_dir
    folder.mkdir(parents=True, exist_ok=True)
    install(build_version(store, folder, BuildParams(), space=namespace), folder)


def packed_record(user: str, seq: int, ts: int, vector: np.ndarray, space: str) -> bytes:
    """A worker's record; its two interests repeat the user vector, so the served merge ranks like the vector alone."""
    interests = np.stack([vector, vector])
    return user_record(user, seq, ts, "m1", vector, interests, np.array([0.5, 0.5]), False, space=space)


def synthetic_events(topics: np.ndarray, seed: int = 3) -> list[dict]:
    """Events in time order: users mostly watch their favourite topic; some skips and impressions."""
    rng = np.random.default_rng(seed)
    favourite = rng.integers(0, topics.max() + 1, N_USERS)
    events = []
    for i in range(N_EVENTS):
        u = int(rng.integers(N_USERS))
        pool = np.flatnonzero(topics == favourite[u]) if rng.random() < 0.8 else np.arange(N_ITEMS)
        video = int(rng.choice(pool))
        kind = "impression" if rng.random() < 0.1 else "watch"
        watch = 1000.0 if rng.random() < 0.15 else 9000.0  # 1000/10000 < skip ratio
        events.append({"user": f"u{u}", "video": f"v{video}", "ts": 1_000_000 + 1000 * i, "watch_ms": watch,
                       "duration_ms": 10_000.0, "kind": kind, "offset": i})
    return events


def simulated_worker(events: list[dict], items: np.ndarray, space: str) -> list[bytes]:
    """One record per event (the state after it): the normalised sum of the user's watched items, decayed."""
    state: dict[str, np.ndarray] = {}
    seq: dict[str, int] = {}
    out = []
    for ev in events:
        v = items[int(ev["video"][1:])]
        weight = 0.0 if ev["kind"] == "impression" else (-0.3 if ev["watch_ms"] / ev["duration_ms"] < SKIP_RATIO else 1.0)
        s = 0.9 * state.get(ev["user"], np.zeros_like(v)) + weight * v
        state[ev["user"]] = s
        seq[ev["user"]] = seq.get(ev["user"], 0) + 1
        norm = np.linalg.norm(s)
        out.append(packed_record(ev["user"], seq[ev["user"]], ev["ts"], (s / norm if norm else s + 1e-3), space))
    return out


def offline_reference(events: list[dict], records: list[bytes], items: np.ndarray, rate: float) -> tuple[int, int, int]:
    """(scored, hits, unscored) by the prequential rule, in numpy: each event vs the record of the user's previous event."""
    last: dict[str, np.ndarray] = {}
    scored = hits = unscored = 0
    for ev, rec in zip(events, records):
        if to_score(ev["kind"], ev["watch_ms"], ev["duration_ms"], ev["user"], ev["offset"], SKIP_RATIO, rate):
            before = last.get(ev["user"])
            if before is None:
                unscored += 1
            else:
                top = np.argsort(-(items @ before), kind="stable")[:K]
                scored += 1
                hits += int(ev["video"][1:]) in top
        last[ev["user"]] = codec.bin_to_vec(codec.unpack(rec)["vector"])
    return scored, hits, unscored


def interleaved(events: list[dict], records: dict[str, list[bytes]], seed: int, lag: int) -> list[tuple]:
    """The two streams as a live reader sees them: each record stream at most one record ahead, ``lag`` behind."""
    rng = np.random.default_rng(seed)
    out: list[tuple] = []
    read = {ns: 0 for ns in records}
    for i, ev in enumerate(events):
        for ns, recs in records.items():
            target = min(len(recs), max(i - lag, min(i + 1, read[ns] + int(rng.integers(0, 3)))))
            out += [("record", ns, recs[j]) for j in range(read[ns], max(read[ns], target))]
            read[ns] = max(read[ns], target)
        out.append(("event", ev))
    for ns, recs in records.items():
        out += [("record", ns, r) for r in recs[read[ns]:]]
    return out


@pytest.mark.parametrize("rate", [1.0, 0.5])
def test_the_monitor_hitrate_equals_the_offline_prequential_computation(tmp_path: Path, rate: float) -> None:
    spaces = {"": catalogue(16, seed=0), "v2": catalogue(8, seed=1)}
    for ns, (items, _) in spaces.items():
        publish_space(tmp_path, ns, items)
    events = synthetic_events(spaces[""][1])
    records = {ns: simulated_worker(events, items, ns) for ns, (items, _) in spaces.items()}
    indexes = SpaceIndexes(tmp_path, list(spaces))
    indexes.refresh()
    lag = 20
    monitor = Monitor(list(spaces), indexes.rank, k=K, delay_s=lag + 2, window=10 * N_EVENTS)
    now = 0.0  # the clock ticks once per event read: a record is at most `lag` events late, the delay is longer
    for item in interleaved(events, records, seed=7, lag=lag):
        if item[0] == "record":
            monitor.on_record(item[1], held_record(codec.unpack(item[2])))
        else:
            now += 1
            ev = item[1]
            if to_score(ev["kind"], ev["watch_ms"], ev["duration_ms"], ev["user"], ev["offset"], SKIP_RATIO, rate):
                monitor.on_event(WatchEvent(ev["user"], ev["video"], ev["ts"], ev["offset"]), now)
        monitor.score_due(now)
    monitor.score_due(float("inf"))
    for ns, (items, _) in spaces.items():
        scored, hits, unscored = offline_reference(events, records[ns], items, rate)
        stats = monitor.stats[ns]
        assert 50 < scored and 0 < hits < scored, "the replay must exercise hits and misses"
        assert (stats.window.events, stats.window.hits, sum(stats.skipped.values())) == (scored, hits, unscored), ns
        assert stats.window.hitrate == pytest.approx(hits / scored)
        assert set(stats.skipped) <= {"unpaired", "no-record"}


def test_a_record_that_already_includes_the_event_is_not_its_pair() -> None:
    seen: list[int] = []

    def ranker(ns, record, k):
        seen.append(record["seq"])
        return ["hit"]

    monitor = Monitor([""], ranker, k=1, delay_s=1.0)
    rec = lambda seq, ts: held_record({"user": "u", "seq": seq, "ts": ts, "vector": b"\0" * 4})  # noqa: E731
    monitor.on_record("", rec(1, 100))
    monitor.on_record("", rec(2, 200))  # the worker already applied the event at ts 200
    monitor.on_event(WatchEvent("u", "hit", 200), now=0.0)
    monitor.on_event(WatchEvent("u", "x", 300), now=0.0)
    monitor.on_record("", rec(3, 300))  # in flight while the second event waited, and itself includes it
    outcomes = monitor.score_due(1.0)
    assert seen == [1, 2] and [o.hit for o in outcomes] == [True, False]
    late = Monitor([""], ranker, k=1, delay_s=1.0)
    late.on_event(WatchEvent("u", "hit", 500), now=0.0)
    late.on_record("", rec(4, 400))  # published before the event, read after it: still its pair
    assert [o.record_seq for o in late.score_due(1.0)] == [4]


def test_the_monitor_holds_at_most_max_users_per_namespace_evicting_the_least_recently_updated() -> None:
    """Issue 27, finding 8: on main every user's records were held forever (10M users x 2 namespaces ~ 78 GiB)."""
    monitor = Monitor(["", "v2"], lambda ns, record, k: ["hit"], k=1, delay_s=0.0, max_users=100)
    rec = lambda user, seq: held_record({"user": user, "seq": seq, "ts": seq, "vector": b"\0" * 4})  # noqa: E731
    for seq in (1, 2, 3):
        for u in range(1_000):
            monitor.on_record("", rec(f"u{u}", seq))
        monitor.on_record("", rec("u5", seq + 10))  # an active user stays
    assert len(monitor.records[""]) == 100 and len(monitor.records["v2"]) == 0
    assert monitor.evicted[""] == 3_001 - 100  # 3,001 users taken in (u5 comes back after each round), 100 held
    assert "u5" in monitor.records[""] and "u999" in monitor.records[""] and "u0" not in monitor.records[""]
    for seq in (20, 21, 22):
        monitor.on_record("", rec("u5", seq))
    assert [r.seq for r in monitor.records[""]["u5"]] == [21, 22]  # still the last KEEP records of a held user
    monitor.on_event(WatchEvent("u999", "hit", 10), now=0.0)
    monitor.on_event(WatchEvent("u0", "hit", 10), now=0.0)  # forgotten: skipped, not scored against nothing
    assert [(o.hit, o.reason) for o in monitor.score_due(1.0) if o.namespace == ""] == [(True, ""), (None, "no-record")]


def test_sampling_is_deterministic_and_near_the_rate() -> None:
    picks = [sampled(f"u{i % 97}", i, 0.1) for i in range(20_000)]
    assert picks == [sampled(f"u{i % 97}", i, 0.1) for i in range(20_000)]
    assert 0.09 < np.mean(picks) < 0.11
    assert all(sampled("u", i, 1.0) for i in range(10))


def test_the_hitrate_window_slides() -> None:
    window = HitWindow(size=4)
    for hit in [True, True, True, True, False, False]:
        window.add(hit)
    assert (window.events, window.hits, window.hitrate) == (6, 4, 0.5)


def stat(hitrate: float, window: int = 1000, updated_at: float | None = None) -> MonitorStat:
    return MonitorStat(window, int(hitrate * window), hitrate, window, time.time() if updated_at is None else updated_at)


def test_the_gate_passes_a_better_or_equal_namespace_and_refuses_a_worse_one(tmp_path: Path) -> None:
    write_monitor(tmp_path, {"": stat(0.30), "v2": stat(0.32), "v3": stat(0.30), "v4": stat(0.28), "v5": stat(0.26)})
    assert read_monitor(tmp_path)["v2"] == stat(0.32, updated_at=read_monitor(tmp_path)["v2"].updated_at)
    assert gate(tmp_path, "v2", "", margin=0.0)[0]
    assert gate(tmp_path, "v3", "", margin=0.0)[0]
    assert gate(tmp_path, "v4", "", margin=0.03)[0]
    ok, why = gate(tmp_path, "v5", "", margin=0.03)
    assert not ok and "refused" in why and "'v5' hitrate 0.2600" in why
    assert not gate(tmp_path, "v4", "", margin=0.0)[0]


def test_the_gate_refuses_too_few_events_a_missing_or_a_stale_status(tmp_path: Path) -> None:
    write_monitor(tmp_path, {"": stat(0.30), "few": stat(0.9, window=50), "old": stat(0.9, updated_at=time.time() - 3600)})
    ok, why = gate(tmp_path, "few", "", margin=0.0, min_events=200)
    assert not ok and "50 scored events" in why
    ok, why = gate(tmp_path, "nope", "", margin=0.0)
    assert not ok and "no live quality for 'nope'" in why
    ok, why = gate(tmp_path, "old", "", margin=0.0, max_age_s=300)
    assert not ok and "s old" in why
    assert gate(tmp_path, "old", "", margin=0.0, max_age_s=None)[0]
    assert read_monitor(tmp_path / "none") == {}


# --- against a real broker ---------------------------------------------------------------------------------------
def _metric(text: str, name: str, namespace: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{name}{{namespace="{namespace}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


def test_the_monitor_scores_live_topics_and_writes_metrics_and_status(make_settings, backend_kind, request) -> None:
    from kafka import KafkaProducer

    from dreamstream.kafka.security import kafka_python_options
    from dreamstream.topics import USER_EMBEDDINGS, WATCH_EVENTS, create_topics

    if backend_kind == "milvus":  # the same service, its indexes read from Milvus collections behind aliases
        from backends_support import SpacePublisher
        from dreamstream.index.milvus_connection import MilvusNames

        settings = make_settings(partitions=2, index_backend="milvus", milvus_uri=request.getfixturevalue("milvus_uri"))
        spaces = SpacePublisher("milvus", settings.index_dir, settings.milvus_uri, MilvusNames(settings.topic_prefix))
        publish = lambda ns, vectors: spaces.publish(ns, [f"v{i}" for i in range(len(vectors))], vectors)  # noqa: E731
    else:
        settings = make_settings(partitions=2)
        publish = lambda ns, vectors: publish_space(settings.index_dir, ns, vectors)  # noqa: E731
    create_topics(settings)
    create_topics(settings.in_namespace("v2"))
    old_items, _ = catalogue(16, seed=0)
    new_items, _ = catalogue(8, seed=1)
    publish("", old_items)
    publish("v2", new_items)
    producer = KafkaProducer(**kafka_python_options(settings))
    send = lambda topic, user, value: producer.send(topic, key=user.encode(), value=value)  # noqa: E731
    old_topic, new_topic = settings.topic(USER_EMBEDDINGS), settings.in_namespace("v2").topic(USER_EMBEDDINGS)
    for i in range(10):  # every user's record points at video v{i}: in "" its own vector, in v2 a far item's
        user = f"u{i}"
        send(old_topic, user, packed_record(user, 1, 1000, old_items[i], ""))
        send(new_topic, user, packed_record(user, 1, 1000, -new_items[i], "v2"))
    send(old_topic, "u0", packed_record("u0", 2, 2000, -old_items[0], ""))  # includes u0's event: not its pair
    send(old_topic, "u1", b"\xc1 not msgpack")
    events = settings.topic(WATCH_EVENTS)
    for i in range(10):
        send(events, f"u{i}", codec.pack({"user": f"u{i}", "video": f"v{i}", "ts": 2000, "watch_ms": 9000,
                                           "duration_ms": 10000}))
    send(events, "u2", codec.pack({"user": "u2", "video": "v2", "ts": 3000, "watch_ms": 500, "duration_ms": 10000}))
    send(events, "u3", codec.pack({"user": "u3", "video": "v9", "ts": 3000, "watch_ms": 0, "duration_ms": 10000,
                                   "kind": "impression"}))
    send(events, "u4", b"garbage")
    producer.flush()
    producer.close()

    port = free_port()
    options = MonitorOptions(sample=1.0, k=5, window=100, delay_s=0.3, status_interval_s=0.3, from_earliest=True,
                             namespaces=("v2",))
    service = MonitorService(settings, options, MonitorMetrics(settings.web_bind))
    server = service.metrics.serve(port)
    stop = threading.Event()
    runner = threading.Thread(target=service.run, args=(stop,))
    runner.start()
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            status = read_monitor(settings.index_dir)
            if all(ns in status and status[ns].events >= 10 for ns in ("", "v2")):
                break
            time.sleep(0.2)
        text = urllib.request.urlopen(f"http://{settings.web_bind}:{port}/metrics", timeout=5).read().decode()
    finally:
        stop.set()
        runner.join(timeout=15)
        service.close()
        server.shutdown()
    assert not runner.is_alive()
    status = read_monitor(settings.index_dir)
    assert (status[""].events, status[""].hits, status[""].hitrate) == (10, 10, 1.0), status
    assert (status["v2"].events, status["v2"].hits, status["v2"].hitrate) == (10, 0, 0.0), status
    raw = json.loads((settings.index_dir / "MONITOR.json").read_text())
    assert set(raw[""]) >= {"events", "hits", "hitrate", "window", "updated_at"}
    assert _metric(text, "dreamstream_monitor_events_total", "") == 10
    assert _metric(text, "dreamstream_monitor_hits_total", "") == 10
    assert _metric(text, "dreamstream_monitor_hits_total", "v2") == 0
    assert _metric(text, "dreamstream_monitor_hitrate", "") == 1.0
    assert _metric(text, "dreamstream_monitor_hitrate", "v2") == 0.0
    assert _metric(text, "dreamstream_monitor_users_held", "") == 10  # the users whose records it holds
    assert _metric(text, "dreamstream_monitor_users_evicted", "") == 0
    assert 'dreamstream_monitor_invalid_total{reason="not-msgpack",source="' in text
    assert gate(settings.index_dir, "v2", "", margin=0.1, min_events=10) == (
        False, "refused: 'v2' hitrate 0.0000 over 10 events vs the default namespace 1.0000 over 10 (margin 0.1)")


def test_the_command_runs_until_sigterm_and_exits_cleanly(make_settings, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from kafka import KafkaConsumer, TopicPartition

    from dreamstream.kafka.security import kafka_python_options
    from dreamstream.topics import WATCH_EVENTS, create_topics

    settings = make_settings(partitions=1)
    create_topics(settings)
    publish_space(settings.index_dir, "", catalogue(16, seed=0)[0])
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DREAMSTREAM_")}
    env.update(DREAMSTREAM_BROKER=settings.broker, DREAMSTREAM_TOPIC_PREFIX=settings.topic_prefix,
               DREAMSTREAM_INDEX_DIR=str(settings.index_dir), DREAMSTREAM_MONITOR_STATUS_INTERVAL_S="0.5")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dreamstream"), "monitor", "--metrics-port", str(port),
                             "--sample", "1"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while "" not in read_monitor(settings.index_dir) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'dreamstream_monitor_events_total{namespace=""} 0.0' in text
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err
    group = KafkaConsumer(**kafka_python_options(settings), group_id=f"{settings.topic_prefix}dreamstream-monitor")
    try:  # the group holds the position it started from (the latest offset), so a restart resumes there
        assert group.committed(TopicPartition(settings.topic(WATCH_EVENTS), 0)) == 0
    finally:
        group.close()
