"""The stream worker end to end: real broker, real `dreamstream worker` processes, real ONNX bundles.

Every check compares what the worker published with an independent numpy
computation from the item vectors published on item-vectors, and judges the
worker by state only: records on the topics, the offsets its group
committed, its /metrics page and its exit code (helpers: ``tests/e2e_support.py``).
"""
from __future__ import annotations

import re
import shutil
import threading
import time

import numpy as np
import pytest

from dreamstream import codec
from dreamstream.bench import harness as h
from dreamstream.broker import free_port
from dreamstream.bundle import load_bundle
from dreamstream.client import user_partition
from dreamstream.topics import DLQ, USER_EMBEDDINGS, create_topics
from e2e_support import (assert_exact, committed_offsets, counts, install, log_hint, metric, metric_of, metrics_page,
                         metrics_when, read_dead_letters, read_topic, ready_stack, samples, wait_until, worker_group)

pytestmark = pytest.mark.slow


@pytest.fixture
def stack(make_settings, tmp_path, bundle_dir):
    """Settings + topics + item vectors published; yields (settings, item vectors, start_worker)."""
    s = make_settings(partitions=4, web_port=free_port(), cold_min_positive=0, batch_size=512, batch_timeout_s=0.05,
                      store="memory://")
    items = ready_stack(s, bundle_dir)
    workers: list[h.WorkerProcess] = []

    def start() -> h.WorkerProcess:
        w = h.WorkerProcess(s, tmp_path / f"worker-{len(workers)}.log").start()
        workers.append(w)
        return w

    yield s, items, start
    for w in workers:
        w.stop()


def published_by(s, w: h.WorkerProcess, what: str, timeout_s: float = 40.0) -> None:
    """Wait until the worker on ``s.web_port`` has published user-embeddings records (its first output)."""
    wait_until(lambda: (metric_of(s.web_port, "dreamstream_user_records_total") or 0) > 0 or not w.alive(), timeout_s,
               what, detail=lambda: w.log_text()[-3000:])
    assert w.alive(), w.log_text()[-3000:]


def old_observations(body: str | None, older_than: str = "1.0") -> float:
    """How many event-age observations on a /metrics page were above ``older_than`` seconds."""
    count = metric(body, "dreamstream_event_age_seconds_count") or 0.0
    return count - (metric(body, "dreamstream_event_age_seconds_bucket", le=older_than) or 0.0)


def latest_seqs(s) -> dict[str, int]:
    """Every user's highest seq on user-embeddings now."""
    out: dict[str, int] = {}
    for _, _, rec in read_topic(s, s.topic(USER_EMBEDDINGS)):
        out[rec["user"]] = max(out.get(rec["user"], 0), rec["seq"])
    return out


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
    assert (metric(body, "dreamstream_user_records_total") or 0) >= 300, body  # its output, counted by itself
    assert metric(body, "dreamstream_replayed_events_total") == 0.0, body  # one worker, no crash: nothing replayed
    assert s.gc_tuning  # the worker froze its startup objects at its first output: the exact result spans the freeze
    assert w.stop() == 0, w.log_text()[-3000:]


def test_sigkill_three_times_mid_stream_is_exactly_once(stack):
    s, items, start = stack
    events = h.synthetic_events(3000, 300, list(items), seed=4)
    msgs = h.event_messages(events)
    producer = threading.Thread(target=h.produce_sync, args=(s, s.topic("watch-events"), msgs), kwargs={"rate": 110})
    producer.start()  # ~27 s of traffic; the worker dies three times while it flows
    w = start()
    restarted: list[h.WorkerProcess] = []
    ages: list[str | None] = []  # each restarted worker's /metrics page, read just before its kill (the last: at the end)
    killed_mid_stream = 0
    for i in range(3):
        published_by(s, w, f"worker {i} publishes its first records")
        applied = metric_of(s.web_port, "dreamstream_events_total") or 0
        # mid-stream: it applies more events (or the traffic is over)
        wait_until(lambda: (metric_of(s.web_port, "dreamstream_events_total") or 0) >= applied + 30
                   or not producer.is_alive(), 20, f"worker {i} applies events after its first output",
                   detail=lambda: w.log_text()[-3000:])
        if w in restarted:
            ages.append(metrics_page(s.web_port))
        killed_mid_stream += producer.is_alive()
        w.kill()  # SIGKILL: no flush, no commit
        w = start()
        restarted.append(w)
    producer.join()
    col = h.read_records(s, counts(events), timeout_s=60)
    assert_exact(col, events, items)
    assert killed_mid_stream >= 2
    assert w.alive(), w.log_text()[-3000:]
    # a restarted worker holds its catch-up's records; when they go out, their age spans the restart (>= ~4 s), and
    # its event-age histogram observes it (the killed ones: read before their kill; the last one: live)
    wait_until(lambda: any(old_observations(body) > 0 for body in ages + [metrics_page(s.web_port)]), 30,
               "a restarted worker's event-age histogram observes records older than 1 s (its catch-up's)",
               detail=lambda: (ages, metrics_page(s.web_port)))


def test_sigterm_mid_stream_commits_what_it_applied_and_the_next_worker_starts_there(stack):
    """A clean stop with rows still cached: flushed and committed before the process exits 0, nothing replayed."""
    s, items, start = stack
    events = h.synthetic_events(3000, 300, list(items), seed=6)
    producer = threading.Thread(target=h.produce_sync, args=(s, s.topic("watch-events"), h.event_messages(events)),
                                kwargs={"rate": 150})  # ~20 s of traffic
    producer.start()
    w = start()
    published_by(s, w, "the worker publishes its first records", timeout_s=60)
    # mid commit interval: rows computed and not yet flushed, their offsets not yet committed
    wait_until(lambda: (metric_of(s.web_port, "dreamstream_cached_rows") or 0) > 0, 20, "rows pending in the row cache",
               interval_s=0.05, detail=lambda: w.log_text()[-3000:])
    assert producer.is_alive(), "traffic ended before the SIGTERM: lower the rate"
    assert w.stop() == 0, w.log_text()[-3000:]
    # what it committed is exactly what it applied: per partition, the committed offset (every message one event,
    # all valid, read from offset 0) equals the events behind the newest records of the partition's users
    watch = s.topic("watch-events")
    committed = committed_offsets(s, watch, worker_group(s))
    assert None not in committed.values() and sum(committed.values()) > 0, committed
    applied: dict[int, int] = {p: 0 for p in committed}
    for user, seq in latest_seqs(s).items():
        applied[user_partition(user, s.partitions)] += seq
    assert applied == committed, (applied, committed, w.log_text()[-3000:])
    nxt = start()
    producer.join()
    col = h.read_records(s, counts(events), timeout_s=90)
    assert_exact(col, events, items)
    # the next worker starts at those offsets: it applies exactly the rest, and replays nothing
    rest = len(events) - sum(committed.values())
    wait_until(lambda: (metric_of(s.web_port, "dreamstream_events_total") or 0) >= rest, 30,
               f"the next worker's dreamstream_events_total reaches {rest}", detail=lambda: metrics_page(s.web_port))
    body = metrics_page(s.web_port)
    assert metric(body, "dreamstream_events_total") == rest, (rest, body)
    assert metric(body, "dreamstream_replayed_events_total") == 0.0, body
    assert nxt.alive(), nxt.log_text()[-3000:]


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
    letters = read_dead_letters(s, len(hostile) + 1, timeout_s=30)
    assert w.alive(), w.log_text()[-3000:]
    assert len(letters) == len(hostile) + 1
    counted = metrics_when(s, f"dreamstream_events_total {float(len(valid))}")
    assert sum(samples(counted, "dreamstream_dead_letters_total").values()) == len(hostile) + 1, counted
    assert metric(counted, "dreamstream_events_total") == len(valid), counted
    reasons = [letter["reason"] for letter in letters]
    for _, value, words in hostile:
        hits = [r for r in reasons if words in r]
        assert hits, (words, reasons)
    assert any(r.startswith("array element 1: field 'watch_ms'") for r in reasons)
    for letter in letters:
        assert letter["topic"] == s.topic("watch-events") and letter["offset"] >= 0 and letter["value"]
    assert_exact(col, valid, items)


def test_hot_reload_switches_model_and_refuses_a_corrupt_bundle(make_settings, tmp_path, same_space_bundles):
    """A bundle of the same item space switches in place; a corrupt one is refused (a new item space: test_rollout_e2e)."""
    first, second = same_space_bundles
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
        assert metric_of(s.web_port, "dreamstream_model_info", version=b1.version) == 1.0
        install(second, s.model_dir)
        # keep events flowing while the switch happens
        h.produce_sync(s, s.topic("watch-events"), msgs[600:1200], rate=300)
        wait_until(lambda: metric_of(s.web_port, "dreamstream_model_info", version=b2.version) == 1.0, 30,
                   f"dreamstream_model_info{{version={b2.version}}} 1", detail=lambda: w.log_text()[-3000:])
        assert samples(metrics_page(s.web_port), "dreamstream_model_info") == {(("version", b2.version),): 1.0}
        # a corrupt newer bundle: refused, v2 keeps serving
        bad = s.model_dir / "v29990101-000000"
        shutil.copytree(second, tmp_path / "bad")
        onnx = tmp_path / "bad" / "opal_step.onnx"
        data = bytearray(onnx.read_bytes())
        data[len(data) // 2] ^= 0xFF
        onnx.write_bytes(bytes(data))
        (tmp_path / "bad").rename(bad)
        # no state shows that the worker looked at the corrupt folder: its log line is the hint to wait for
        log_hint(w, "refusing model bundle version=v29990101-000000", 30)
        h.produce_sync(s, s.topic("watch-events"), msgs[1200:])
        col = h.read_records(s, counts(events), timeout_s=90)
        assert w.alive(), w.log_text()[-3000:]
        assert_exact(col, events, items)
        late = {e["user"] for e in events[1200:]}
        assert {col.latest[u]["model"] for u in late} == {b2.version}
        assert samples(metrics_page(s.web_port), "dreamstream_model_info") == {(("version", b2.version),): 1.0}
        # the whole history: b1 then b2, once, for every user (never back to b1, never the corrupt bundle)
        history: dict[str, list[str]] = {}
        for _, _, rec in read_topic(s, s.topic(USER_EMBEDDINGS)):
            history.setdefault(rec["user"], []).append(rec["model"])
        assert {m for ms in history.values() for m in ms} == {b1.version, b2.version}, history
        for user, models in history.items():
            switched = models.index(b2.version) if b2.version in models else len(models)
            assert set(models[:switched]) <= {b1.version} and set(models[switched:]) <= {b2.version}, (user, models)
        assert all(ms[0] == b1.version for u, ms in history.items() if u in counts(events[:600])), history
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
    letters = read_dead_letters(s, 1, timeout_s=60)
    assert len(letters) == 1 and "not in the item table" in letters[0]["reason"]
    col = h.read_records(s, counts(good), timeout_s=60)
    assert_exact(col, good, items)

    h.publish_items(s, ["late-video"], late_vec[None, :], model="late")
    # the item table follows item-vectors live: a probe (a fresh user watching the video) shows when it has the
    # video - its record comes out. A probe that came too early is dead-lettered as well and re-driven with the rest.
    probes: list[dict] = []
    deadline = time.monotonic() + 30
    while True:
        probe = dict(late, user=f"probe-{len(probes)}", ts=late["ts"] + 1 + len(probes))
        probes.append(probe)
        h.produce_sync(s, s.topic("watch-events"), h.event_messages([probe]))

        def outcome() -> str | None:
            if any(rec["user"] == probe["user"] for _, _, rec in read_topic(s, s.topic(USER_EMBEDDINGS))):
                return "applied"
            return "dead-lettered" if len(read_topic(s, s.topic(DLQ))) >= len(probes) + 1 else None

        if wait_until(outcome, 30, f"{probe['user']} applied or dead-lettered", interval_s=0.2) == "applied":
            break
        assert time.monotonic() < deadline, "the item table never got late-video"
    assert redrive_dead_letters(s, progress=False).sent == len(probes)  # the letter (and any probe that came too early)
    assert redrive_dead_letters(s, progress=False).sent == 0  # a letter is re-driven once
    col = h.read_records(s, counts(good + [late] + probes), timeout_s=60)
    assert_exact(col, good + [late] + probes, {**items, "late-video": late_vec})
    assert w.alive(), w.log_text()[-3000:]
