"""Prometheus metrics of the worker, served on its web port at ``/metrics``.

A private registry (not the process-global one) so two apps in one process
(tests, the bench's plain agent) never collide on metric names.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger("streams.worker")

# Stages of the batch loop, timed per batch: the bench reads their p99s off /metrics (dreamstream.bench.worker_stages),
# so a slow latency run names the stage it lost its time in. Buckets ~1.4x apart from 0.25 ms to 2.5 s.
STAGES = ("fetch_wait", "decode", "apply", "send", "flush_wait", "flush_encode")
STAGE_BUCKETS = tuple(round(0.00025 * 1.4 ** i, 6) for i in range(28))


@dataclass
class WorkerMetrics:
    """Counters and histograms the agents update once per batch (never per event: cheap)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.events = Counter("dreamstream_events", "Events applied to user states.", registry=r)
        self.replays = Counter("dreamstream_replayed_events", "Replayed events skipped (already applied).", registry=r)
        self.dead_letters = Counter("dreamstream_dead_letters", "Inputs rejected to the dead-letter topic, by reason label "
                                    "(a fixed list: streams.domain.validate.LABELS).", ["reason"], registry=r)
        self.unwritable_letters = Counter(
            "dreamstream_dead_letters_unwritable", "Dead letters the broker refused for good (too large, corrupt), by "
            "the error's class (a fixed list: streams.kafka.output.UNWRITABLE): counted and logged instead of retried, "
            "which would stop the partition's commits for ever.", ["error"], registry=r)
        self.records = Counter("dreamstream_user_records", "user-embeddings records published.", registry=r)
        self.items_refused = Counter("dreamstream_item_vectors_refused", "item-vectors records the item table refused "
                                     "(unreadable, or a bad-vector: wrong width, non-finite, absurd norm).", ["reason"],
                                     registry=r)
        self.items = Counter("dreamstream_item_vectors", "Item vectors embedded by the item tower.", registry=r)
        self.watchers = Counter("dreamstream_live_watchers", "Watches of live (new) videos reported on item-watchers "
                                "with the watcher's vector.", registry=r)
        self.refined = Counter("dreamstream_live_refinements", "item-watchers records the item refiner read, by "
                               "outcome: applied, tower (a new video's start), replay (a watch-event position it "
                               "already applied), other-space (a watcher in another bundle's item space).",
                               ["outcome"], registry=r)
        self.refined_published = Counter("dreamstream_live_vectors_published", "Refined vectors of live videos the "
                                         "item refiner published on item-vectors.", registry=r)
        self.items_read = Counter("dreamstream_item_records_read", "item-vectors records the item table read (a warm "
                                  "restart of the rocksdb item store reads only the tail written since it stopped).",
                                  registry=r)
        self.item_store_bytes = Gauge("dreamstream_item_store_bytes", "RAM held by the item store's own arrays (the "
                                      "whole table, or the rocksdb store's hot cache).", registry=r)
        self.batch_size = Histogram("dreamstream_batch_events", "Messages per batch taken from watch-events.",
                                    buckets=(1, 8, 32, 128, 512, 1024, 2048, 4096, 8192, 16384), registry=r)
        self.step_seconds = Histogram("dreamstream_step_seconds", "Time of apply_batch (all waves, ONNX included).",
                                      buckets=(0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1), registry=r)
        self.batch_seconds = Histogram("dreamstream_batch_seconds", "Whole batch: decode, state I/O, apply, sends.",
                                       buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=r)
        self.fetch_wait_seconds = Histogram(
            "dreamstream_fetch_wait_seconds", "Time the batch loop waited for watch-events before each batch: the "
            "broker's fetch round trip when records keep coming; a large share of the loop means waiting, not working.",
            buckets=(0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25), registry=r)
        self.event_age_seconds = Histogram(
            "dreamstream_event_age_seconds", "Age of each batch's oldest event (now minus its Kafka timestamp) when the "
            "batch's user-embeddings records went to the producer (a catch-up's held records: once, when they go out): how "
            "stale published embeddings are at worst.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10, 30, 60, 300), registry=r)
        self.flush_seconds = Histogram("dreamstream_flush_seconds", "Row-cache flush: encode, changelog acknowledgement, "
                                       "deliveries, offset commit (runs beside the batches).",
                                       buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r)
        self.stage_seconds = Histogram(
            "dreamstream_stage_seconds", "Per batch, the time of each stage of the batch loop: fetch_wait (for the feed), "
            "decode (and the users' rows read), apply (apply_batch), send (records and dead letters to the producer), "
            "flush_wait (the loop held by a flush: backpressure, a finished catch-up), flush_encode (a flush's rows "
            "encoded, one ~1 MB request at a time, between batches).", ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self.commits = Counter("dreamstream_commits", "Flushes that committed watch-events offsets: everything below them "
                               "is durable (rows, records, dead letters). Flat while lag grows = output is stuck.",
                               registry=r)
        self.cached_rows = Gauge("dreamstream_cached_rows", "User rows computed and not yet flushed to the changelog.", registry=r)
        self.lag = Gauge("dreamstream_consumer_lag", "Messages behind the end of watch-events, per partition.", ["partition"], registry=r)
        self.users = Gauge("dreamstream_users", "User-state rows held by this worker.", registry=r)
        self.stalled = Gauge("dreamstream_stalled", "1 while the watchdog sees lag with no progress for DREAMSTREAM_WATCHDOG_S.", registry=r)
        self.stalls = Counter("dreamstream_stalls", "Stalls the watchdog detected.", registry=r)
        self.model = Gauge("dreamstream_model_info", "The bundle version being served (value 1).", ["version"], registry=r)

    def observe_batch(self, messages: int, result: Any, marks: tuple[float, ...], fetch_wait_s: float, cached_rows: int,
                      lags: dict[int, int]) -> None:
        """One batch: counts, timings, lag per partition and a debug line.

        ``marks``: start, decoded, applied, sent; ``lags``: per partition,
        messages between the batch's last offset and the end its fetch saw.
        """
        t0, t1, t2, t3 = marks
        self.events.inc(result.applied)
        self.replays.inc(result.replays)
        self.records.inc(len(result.records))
        self.batch_size.observe(messages)
        self.step_seconds.observe(t2 - t1)
        self.batch_seconds.observe(t3 - t0)
        self.fetch_wait_seconds.observe(fetch_wait_s)
        for stage, seconds in zip(STAGES, (fetch_wait_s, t1 - t0, t2 - t1, t3 - t2)):
            self.stage_seconds.labels(stage=stage).observe(seconds)
        self.cached_rows.set(cached_rows)
        for partition, lag in lags.items():
            self.lag.labels(partition=str(partition)).set(max(0, lag))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("batch messages=%d applied=%d replays=%d records=%d waves=%d fetch_wait_ms=%.1f decode_ms=%.1f "
                      "apply_ms=%.1f send_ms=%.1f", messages, result.applied, result.replays, len(result.records),
                      result.waves, fetch_wait_s * 1e3, *((b - a) * 1e3 for a, b in zip(marks, marks[1:])))

    def watch_item_lookups(self, counts: Any) -> None:
        """Export the item store's lookup counts (``streams.items.store.LookupCounts``), read at each scrape."""
        self.registry.register(_ItemLookups(counts))

    def observe_age(self, oldest_ms: int | None) -> float | None:
        """How old the oldest event behind records just sent was: the staleness ranking services see."""
        if oldest_ms is None:
            return None
        age_s = max(0.0, time.time() - oldest_ms / 1000)
        self.event_age_seconds.observe(age_s)
        return age_s

    def serve_model(self, version: str) -> None:
        self.model.clear()
        self.model.labels(version=version).set(1)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _ItemLookups:
    """``dreamstream_item_lookups_total{result}`` and ``..._lookup_seconds_total``: the store counts, the page reads them."""

    def __init__(self, counts: Any) -> None:
        self.counts = counts

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(
            "dreamstream_item_lookups", "Videos looked up for events, by where the vector came from: cache (RAM), "
            "disk (a rocksdb hot-cache miss: one point read) or absent (an unknown-video dead letter).", labels=["result"])
        for result in ("cache", "disk", "absent"):
            family.add_metric([result], getattr(self.counts, result))
        yield family
        yield CounterMetricFamily("dreamstream_item_lookup_seconds", "Time spent looking up events' videos in the "
                                  "item store (RAM cache and RocksDB reads).", value=self.counts.seconds)
