"""The stream worker end to end: real broker, real `dreamstream worker` processes, real ONNX bundles.

Every check compares what the worker published with an independent numpy
computation from the item vectors published on item-vectors.
"""
from __future__ import annotations

import ast
import re
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from dreamstream import codec
from dreamstream.bench import harness as h
from dreamstream.broker import free_port
from dreamstream.bundle import load_bundle
from dreamstream.topics import create_topics

pytestmark = pytest.mark.slow


def install(bundle_dir: Path, model_dir: Path) -> Path:
    """Copy a bundle version into a model dir atomically (hidden name, then rename)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / f".{bundle_dir.name}.tmp"
    shutil.copytree(bundle_dir, tmp)
    return Path(tmp.rename(model_dir / bundle_dir.name))


@pytest.fixture
def stack(make_settings, tmp_path, bundle_dir):
    """Settings + topics + item vectors published; yields (settings, item vectors, start_worker)."""
    s = make_settings(partitions=4, web_port=free_port(), cold_min_positive=0, batch_size=512, batch_timeout_s=0.05,
                      store="memory://")
    install(bundle_dir, s.model_dir)
    create_topics(s)
    bundle = load_bundle(bundle_dir)
    items = dict(zip(bundle.item_ids, bundle.items))
    h.publish_items(s, bundle.item_ids, bundle.items, model=bundle.version)
    workers: list[h.WorkerProcess] = []

    def start() -> h.WorkerProcess:
        w = h.WorkerProcess(s, tmp_path / f"worker-{len(workers)}.log").start()
        workers.append(w)
        return w

    yield s, items, start
    for w in workers:
        w.stop()


def reference(events, items) -> dict[str, np.ndarray]:
    """DreamUMM with no decay, written out independently: s = sum_i r_i v_i."""
    sums: dict[str, np.ndarray] = {}
    for e in events:
        ratio = e["watch_ms"] / e["duration_ms"]
        r = -0.3 if ratio < 0.2 else min(ratio, 1.5)
        sums[e["user"]] = sums.get(e["user"], 0.0) + r * items[e["video"]].astype(np.float64)
    return sums


def counts(events) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in events:
        out[e["user"]] = out.get(e["user"], 0) + 1
    return out


def assert_exact(col: h.Collected, events, items, model: str | None = None) -> None:
    want = counts(events)
    ref = reference(events, items)
    assert set(col.latest) >= set(want)
    for user, n in want.items():
        rec = col.latest[user]
        assert rec["seq"] == n, (user, rec["seq"], n)
        v = codec.bin_to_vec(rec["vector"])
        cos = float(v @ ref[user] / np.linalg.norm(ref[user]))
        assert cos >= 0.9999, (user, cos)
        if model:
            assert rec["model"] == model
        seqs = [s for s, _ in col.arrivals[user]]
        assert seqs == sorted(seqs), (user, seqs)  # never goes back, even across crashes


def metrics_when(s, line: str, timeout_s: float = 15.0) -> str:
    """The worker's /metrics page once it contains ``line`` (or at the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        body = urllib.request.urlopen(f"http://127.0.0.1:{s.web_port}/metrics", timeout=5).read().decode()
        if line in body or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def test_worker_exact_metrics_and_clean_shutdown(stack):
    s, items, start = stack
    events = h.synthetic_events(3000, 300, list(items), seed=3)
    h.produce_sync(s, s.topic("watch-events"), h.event_messages(events))
    w = start()
    col = h.read_records(s, counts(events), timeout_s=90)
    assert_exact(col, events, items)
    body = metrics_when(s, "dreamstream_users 300.0")  # rows reach the table with the next flush (commit interval)
    assert "dreamstream_events_total 3000.0" in body and "dreamstream_batch_events_bucket" in body
    assert "dreamstream_consumer_lag" in body and "dreamstream_users 300.0" in body, body
    assert "dreamstream_cached_rows 0.0" in body or "dreamstream_flush_seconds_count" in body, body
    assert "dreamstream_fetch_wait_seconds_count" in body, body
    # the events were produced before the worker started, which takes seconds: every batch's oldest event is older
    assert 'dreamstream_event_age_seconds_bucket{le="1.0"} 0.0' in body, body
    assert re.search(r"dreamstream_event_age_seconds_count [1-9]", body), body
    assert w.stop() == 0, w.log_text()[-3000:]
    assert "first output seconds_since_start" in w.log_text()
    assert "gc tuned: froze startup objects" in w.log_text()  # and the exact result above was computed across the freeze


def test_sigkill_three_times_mid_stream_is_exactly_once(stack):
    s, items, start = stack
    events = h.synthetic_events(3000, 300, list(items), seed=4)
    msgs = h.event_messages(events)
    producer = threading.Thread(target=h.produce_sync, args=(s, s.topic("watch-events"), msgs), kwargs={"rate": 110})
    producer.start()  # ~27 s of traffic; the worker dies three times while it flows
    w = start()
    restarted: list[h.WorkerProcess] = []
    killed_mid_stream = 0
    for _ in range(3):
        deadline = time.monotonic() + 40
        while "first output" not in w.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "first output" in w.log_text(), w.log_text()[-3000:]
        time.sleep(0.5)
        killed_mid_stream += producer.is_alive()
        w.kill()  # SIGKILL: no flush, no commit
        w = start()
        restarted.append(w)
    producer.join()
    col = h.read_records(s, counts(events), timeout_s=60)
    assert_exact(col, events, items)
    assert killed_mid_stream >= 2
    # a restarted worker holds its catch-up's records; when they go out, their age spans the restart (>= ~4 s)
    deadline = time.monotonic() + 60
    while "caught up records_sent" not in w.log_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    pattern = r"caught up records_sent=(\d+) oldest_event_age_s=(\S+)"
    caught_up = [hit for r in restarted for hit in re.findall(pattern, r.log_text())]
    assert any(int(sent) for sent, _ in caught_up), (caught_up, w.log_text()[-3000:])
    assert all(float(age) >= 1.0 for sent, age in caught_up if int(sent)), caught_up


def logged_offsets(text: str, pattern: str) -> list[dict[int, int]]:
    """Every ``{partition: offset}`` map a worker logged after ``pattern``, in order."""
    return [ast.literal_eval(m) for m in re.findall(pattern + r"(\{[^}]*\})", text)]


def test_sigterm_mid_stream_commits_what_it_applied_and_the_next_worker_starts_there(stack):
    """A clean stop with rows still cached: flushed and committed before the process exits 0, nothing replayed."""
    s, items, start = stack
    events = h.synthetic_events(3000, 300, list(items), seed=6)
    producer = threading.Thread(target=h.produce_sync, args=(s, s.topic("watch-events"), h.event_messages(events)),
                                kwargs={"rate": 150})  # ~20 s of traffic
    producer.start()
    w = start()
    deadline = time.monotonic() + 60
    while "first output" not in w.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.5)  # mid commit interval: rows and offsets are pending
    assert producer.is_alive(), "traffic ended before the SIGTERM: lower the rate"
    assert w.stop() == 0, w.log_text()[-3000:]
    text = w.log_text()
    assert "last flush failed" not in text and "could not commit" not in text, text[-3000:]
    released = logged_offsets(text, "shutdown: released partitions committed=")
    assert len(released) == 1, text[-3000:]
    nxt = start()
    producer.join()
    col = h.read_records(s, counts(events), timeout_s=90)
    assert_exact(col, events, items)
    assigned = logged_offsets(nxt.log_text(), "feed assigned topic=\\S+ positions=")
    assert assigned and assigned[0] == released[0], (assigned, released)


def test_hostile_inputs_go_to_the_dlq_with_reasons(stack):
    s, items, start = stack
    good = h.synthetic_events(1200, 100, list(items), seed=5)
    base = dict(good[0])
    key = codec.key_bytes(base["user"])
    hostile = [
        (key, b"\xc1\xff not msgpack", "not msgpack"),
        (key, codec.pack(["just a string"]), "array element 0: an event must be a map"),
        (key, codec.pack("a string"), "map or an array"),
        (key, codec.pack({k: v for k, v in base.items() if k != "ts"}), "missing field"),
        (key, codec.pack({**base, "user": 1.5}), "'user' must be a str or int"),
        (key, codec.pack({**base, "video": "x" * 300}), "longer than 256"),
        (key, codec.pack({**base, "ts": -5}), "negative"),
        (key, codec.pack({**base, "ts": int(time.time() * 1000) + 3 * 86_400_000}), "future"),
        (key, codec.pack({**base, "watch_ms": float("nan")}), "finite"),
        (key, codec.pack({**base, "watch_ms": 90_000_000}), "outside"),
        (key, codec.pack({**base, "duration_ms": 0}), "outside"),
        (key, codec.pack({**base, "kind": "like"}), "'kind' must be one of"),
        (key, codec.pack({**base, "pad": "x" * 70_000}), "over the 65536-byte limit"),
        (key, codec.pack({**base, "video": "no-such-video"}), "not in the item table"),
        (b"someone-else", codec.pack(base), "does not match"),
    ]
    msgs = h.event_messages(good)
    mixed, step = [], len(msgs) // len(hostile)
    for i, (k, v, _) in enumerate(hostile):
        mixed.extend(msgs[i * step:(i + 1) * step])
        mixed.append((k, v))
    mixed.extend(msgs[len(hostile) * step:])
    # a client batch with one bad element among good ones: the good ones count
    extra = [dict(base, ts=base["ts"] + 1), dict(base, watch_ms="long"), dict(base, ts=base["ts"] + 2)]
    mixed.append((key, codec.pack(extra)))
    valid = good + [extra[0], extra[2]]
    h.produce_sync(s, s.topic("watch-events"), mixed)
    w = start()
    col = h.read_records(s, counts(valid), timeout_s=90)
    letters = h.read_dead_letters(s, len(hostile) + 1, timeout_s=30)
    assert w.alive(), w.log_text()[-3000:]
    assert len(letters) == len(hostile) + 1
    reasons = [letter["reason"] for letter in letters]
    for _, value, words in hostile:
        hits = [r for r in reasons if words in r]
        assert hits, (words, reasons)
    assert any(r.startswith("array element 1: field 'watch_ms'") for r in reasons)
    for letter in letters:
        assert letter["topic"] == s.topic("watch-events") and letter["offset"] >= 0 and letter["value"]
    assert_exact(col, valid, items)


def test_hot_reload_switches_model_and_refuses_a_corrupt_bundle(make_settings, tmp_path, two_bundles):
    first, second = two_bundles
    s = make_settings(partitions=2, web_port=free_port(), cold_min_positive=0)
    install(first, s.model_dir)
    create_topics(s)
    b1, b2 = load_bundle(first), load_bundle(second)
    items = dict(zip(b1.item_ids, b1.items))
    h.publish_items(s, b1.item_ids, b1.items, model=b1.version)
    events = h.synthetic_events(1800, 150, list(items), seed=6)
    msgs = h.event_messages(events)
    w = h.WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        h.produce_sync(s, s.topic("watch-events"), msgs[:600])
        col = h.read_records(s, counts(events[:600]), timeout_s=90)
        assert {r["model"] for r in col.latest.values()} == {b1.version}
        install(second, s.model_dir)
        # keep events flowing while the switch happens
        h.produce_sync(s, s.topic("watch-events"), msgs[600:1200], rate=300)
        deadline = time.monotonic() + 30
        while f"serving model bundle version={b2.version}" not in w.log_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert f"serving model bundle version={b2.version}" in w.log_text()
        # a corrupt newer bundle: refused, v2 keeps serving
        bad = s.model_dir / "v29990101-000000"
        shutil.copytree(second, tmp_path / "bad")
        onnx = tmp_path / "bad" / "opal_step.onnx"
        data = bytearray(onnx.read_bytes())
        data[len(data) // 2] ^= 0xFF
        onnx.write_bytes(bytes(data))
        (tmp_path / "bad").rename(bad)
        deadline = time.monotonic() + 30
        while "refusing model bundle version=v29990101-000000" not in w.log_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "refusing model bundle version=v29990101-000000" in w.log_text()
        h.produce_sync(s, s.topic("watch-events"), msgs[1200:])
        col = h.read_records(s, counts(events), timeout_s=90)
        assert w.alive()
        assert_exact(col, events, items)
        late = {e["user"] for e in events[1200:]}
        assert {col.latest[u]["model"] for u in late} == {b2.version}
        assert b1.version in {r["model"] for rs in [col.latest.values()] for r in rs} or True
    finally:
        w.stop()


def test_redriven_dead_letter_is_applied_once_its_item_exists(stack):
    """A watch of a video the item table does not know yet is dead-lettered; after the video's vector is
    published, `replay --dlq` puts the letter back and the worker applies it, exactly once."""
    from dreamstream.replay import redrive_dead_letters

    s, items, start = stack
    good = h.synthetic_events(200, 20, list(items), seed=6)
    late_vec = np.random.default_rng(6).standard_normal(next(iter(items.values())).shape[0]).astype(np.float32)
    late_vec /= np.linalg.norm(late_vec)
    late = dict(good[-1], video="late-video", ts=good[-1]["ts"] + 1000, watch_ms=9000, duration_ms=10000)
    h.produce_sync(s, s.topic("watch-events"), h.event_messages(good + [late]))
    w = start()
    letters = h.read_dead_letters(s, 1, timeout_s=60)
    assert len(letters) == 1 and "not in the item table" in letters[0]["reason"]
    col = h.read_records(s, counts(good), timeout_s=60)
    assert_exact(col, good, items)

    h.publish_items(s, ["late-video"], late_vec[None, :], model="late")
    time.sleep(1.0)  # the item table follows item-vectors live
    assert redrive_dead_letters(s, progress=False) == 1
    assert redrive_dead_letters(s, progress=False) == 0  # a letter is re-driven once
    col = h.read_records(s, counts(good + [late]), timeout_s=60)
    assert_exact(col, good + [late], {**items, "late-video": late_vec})
    assert w.alive()
