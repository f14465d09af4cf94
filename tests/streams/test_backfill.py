"""Backfill: a namespace rebuilt from the retained log from a point in time, exactly, even through a SIGKILL."""
from __future__ import annotations

import time

import pytest

from dreamstream import rollout
from dreamstream.bench import harness as h
from dreamstream.bundle import load_bundle
from dreamstream.settings import Settings, parse_time_ms
from dreamstream.topics import WATCH_EVENTS, create_topics


def test_namespaced_settings_keep_a_rollouts_outputs_apart(tmp_path) -> None:
    s = Settings(topic_prefix="p.", index_dir=tmp_path)
    ns = s.in_namespace("v2")
    assert s.topic("user-embeddings") == "p.user-embeddings" and ns.topic("user-embeddings") == "p.user-embeddings.v2"
    assert ns.topic("watch-events") == "p.watch-events" and ns.topic("item-features") == "p.item-features"
    assert ns.topic("item-vectors") == "p.item-vectors.v2" and ns.topic("watch-events-dlq") == "p.watch-events-dlq.v2"
    assert s.app_id == "p.dreamstream" and ns.app_id == "p.dreamstream.v2"
    assert s.namespace_index_dir == tmp_path and ns.namespace_index_dir == tmp_path / "v2"
    with pytest.raises(ValueError):
        Settings(namespace="../x")


@pytest.mark.parametrize("text,ms", [("2026-11-01T00:00Z", 1_793_491_200_000), ("2026-11-01T01:00+01:00", 1_793_491_200_000),
                                     ("2026-11-01T00:00", 1_793_491_200_000), ("1793491200000", 1_793_491_200_000)])
def test_start_times_parse_as_iso_or_epoch_ms(text: str, ms: int) -> None:
    assert parse_time_ms(text) == ms and Settings(start_from=text).start_from_ms == ms


def test_a_bad_start_time_is_refused_with_the_format() -> None:
    with pytest.raises(ValueError, match="ISO time"):
        Settings(start_from="last tuesday")


def test_history_advice_says_what_the_half_life_needs_and_warns_when_the_log_is_shorter() -> None:
    now = 1_800_000_000_000
    s = Settings(half_life_s=120.0)
    ok = rollout.history_advice(s, None, now - 3_600_000, now)
    assert "the last 20 minutes" in ok and "enough" in ok and "WARNING" not in ok
    short = rollout.history_advice(s, None, now - 60_000, now)
    assert "WARNING" in short and "retention.ms" in short
    asked = rollout.history_advice(s, now - 7_200_000, now - 3_600_000, now)  # --from earlier than the log holds
    assert "WARNING" in asked
    assert "all of it" in rollout.history_advice(Settings(half_life_s=float("inf")), None, now - 1, now)


@pytest.mark.slow
def test_backfill_from_a_time_is_exact_and_survives_a_sigkill(make_settings, tmp_path, bundle_dir) -> None:
    from e2e_support import assert_exact, counts, install, wait_until

    s = make_settings(partitions=2, cold_min_positive=0, batch_size=64, batch_timeout_s=0.05, web_port=0)
    install(bundle_dir, s.model_dir)
    create_topics(s)
    bundle = load_bundle(bundle_dir)
    items = dict(zip(bundle.item_ids, bundle.items))
    old = h.synthetic_events(800, 40, bundle.item_ids, seed=21)
    new = h.synthetic_events(2400, 40, bundle.item_ids, seed=22, start_ms=old[-1]["ts"] + 1)
    h.produce_sync(s, s.topic(WATCH_EVENTS), h.event_messages(old))
    time.sleep(1.5)  # the Kafka timestamps of the two phases are apart: the cut is between them
    cut_ms = int(time.time() * 1000)
    time.sleep(0.5)
    h.produce_sync(s, s.topic(WATCH_EVENTS), h.event_messages(new))

    ns = s.in_namespace(bundle.version).model_copy(update={"start_from": str(cut_ms), "state_dir": tmp_path / "ns"})
    create_topics(ns)
    h.publish_items(ns, bundle.item_ids, bundle.items, model=bundle.version)
    first = h.WorkerProcess(ns, tmp_path / "backfill-1.log").start()
    try:
        wait_until(lambda: rollout.lag(s, bundle.version).started and rollout.lag(s, bundle.version).total < 2000, 90,
                   "the backfill under way", detail=lambda: first.log_text()[-2000:])
        first.kill()  # mid-way: nothing flushed since its last commit
    finally:
        first.kill()
    second = h.WorkerProcess(ns, tmp_path / "backfill-2.log").start()
    try:
        col = h.read_records(ns, counts(new), timeout_s=120)
        assert_exact(col, new, items, model=bundle.version)  # only the events after the cut, each applied once
        assert set(col.latest) <= {e["user"] for e in new}
        wait_until(lambda: rollout.lag(s, bundle.version).total == 0, 60, "the backfill caught up")
    finally:
        second.stop()
