"""The ``dreamstream monitor`` sidecar: Kafka in, :class:`~dreamstream.monitor.Monitor`, metrics and MONITOR.json out.

Single-threaded like the indexer: records, events, scoring and the status
file happen in one loop, so the core needs no locks. Two kafka-python
consumers:

* ``user-embeddings.<ns>`` of every monitored namespace, every partition by
  manual assignment from the beginning (compacted: that is each user's
  latest record), no group, nothing committed. Events are not read until
  these topics are caught up to their end at start, so no event is paired
  with a half-loaded book; a namespace whose topic appears later (a rollout
  started after the monitor) is attached at the next status tick.
* every partition of ``watch-events``, its offsets auto-committed in its own
  group ``<prefix>dreamstream-monitor`` (a restart resumes there, and the
  group's lag shows whether the monitor keeps up); a group with no
  committed offset starts at the latest offset unless ``--from-earliest``.

It only reads: a value it cannot decode is counted
(``dreamstream_monitor_invalid_total{source,reason}``) and skipped, never
fatal, and there is no dead-letter topic.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge

from dreamstream import codec
from dreamstream.errors import broker_bootstrap
from dreamstream.index.manifest import IndexCorruptError
from dreamstream.index.metrics import serve_registry
from dreamstream.kafka.security import kafka_python_options
from dreamstream.index.refusals import Refusals
from dreamstream.monitor import (DEFAULT_MAX_USERS, DEFAULT_WINDOW, STATUS, Monitor, Outcome, WatchEvent, held_record,
                                 stats_of, to_score, top_k, write_monitor)
from dreamstream.serving import namespace_dir, read_serving
from dreamstream.settings import Settings
from dreamstream.topics import USER_EMBEDDINGS, WATCH_EVENTS

log = logging.getLogger(__name__)

WARN_PER_REASON = 10  # invalid inputs logged at warning per (source, reason); the rest at debug, all counted


@dataclass(frozen=True)
class MonitorOptions:
    """The monitor's own knobs (command options, not settings: nothing else reads them)."""

    sample: float = 0.1
    k: int = 20
    window: int = DEFAULT_WINDOW
    delay_s: float = 2.0
    status_interval_s: float = 5.0
    from_earliest: bool = False
    namespaces: tuple[str, ...] = ()  # extra namespaces, beside the SERVING pointer's
    max_users: int = DEFAULT_MAX_USERS  # users whose records are held per namespace (least recently updated evicted)


def monitored_namespaces(index_dir: Path, extra: Iterable[str] = ()) -> list[str]:
    """The serving namespace, the previous one (while a rollout keeps it), then the ones asked for, once each.

    An unreadable ``SERVING`` is said in the log and the default namespace
    stands in for it: the monitor is read-only and must not exit on a file
    another process broke.
    """
    try:
        pointed = read_serving(index_dir).spaces()
    except IndexCorruptError as err:
        log.error("monitoring the default namespace and --namespace ones only: %s", err)
        pointed = [""]
    spaces = pointed + list(extra)
    for ns in spaces:
        namespace_dir(index_dir, ns)  # a name that is not a folder name is refused here, not at the first build
    return list(dict.fromkeys(spaces))


class MonitorMetrics:
    """Prometheus metrics in their own registry (several monitors in one test process must not collide)."""

    def __init__(self, bind: str = "127.0.0.1") -> None:
        self.bind = bind
        self.registry = CollectorRegistry()
        self.events = Counter("dreamstream_monitor_events", "Sampled positive watch events scored, per namespace.",
                              ["namespace"], registry=self.registry)
        self.hits = Counter("dreamstream_monitor_hits", "Scored events whose video was in the top-k of the user's "
                            "record from before the event.", ["namespace"], registry=self.registry)
        self.hitrate = Gauge("dreamstream_monitor_hitrate", "Hit rate over the last --window scored events.",
                             ["namespace"], registry=self.registry)
        self.skipped = Counter("dreamstream_monitor_skipped", "Sampled events not scored, by reason (no-record: no "
                               "record of the user held; unpaired: only records from after the event; no-index; "
                               "bad-record).", ["namespace", "reason"], registry=self.registry)
        self.invalid = Counter("dreamstream_monitor_invalid", "Input values that could not be decoded, skipped.",
                               ["source", "reason"], registry=self.registry)
        self.users = Gauge("dreamstream_monitor_users_held", "Users whose records are held, per namespace (at most "
                           "--max-users).", ["namespace"], registry=self.registry)
        self.evicted = Gauge("dreamstream_monitor_users_evicted", "Users forgotten since start to stay within "
                             "--max-users (their next event is skipped as no-record), per namespace.", ["namespace"],
                             registry=self.registry)

    def serve(self, port: int) -> Any:
        """Expose /metrics on ``bind``:``port``; None when ``port`` is 0. ``.shutdown()`` stops the server."""
        return serve_registry(self.registry, port, self.bind)

    def record(self, outcomes: Iterable[Outcome], monitor: Monitor) -> None:
        """Count scored and skipped outcomes and refresh the windowed hit rates."""
        for out in outcomes:
            if out.hit is None:
                self.skipped.labels(out.namespace, out.reason).inc()
            else:
                self.events.labels(out.namespace).inc()
                if out.hit:
                    self.hits.labels(out.namespace).inc()
        for ns, stats in monitor.stats.items():
            rate = stats.window.hitrate
            if not math.isnan(rate):
                self.hitrate.labels(ns).set(rate)
            self.users.labels(ns).set(len(monitor.records[ns]))
            self.evicted.labels(ns).set(monitor.evicted[ns])


class SpaceIndexes:
    """The current index version of every monitored namespace, reloaded when its CURRENT moves."""

    def __init__(self, index_dir: Path, namespaces: Sequence[str], backend: Any = None) -> None:
        from dreamstream.index.backend import FaissBackend

        self.index_dir, self.namespaces = Path(index_dir), list(namespaces)
        self.backend = backend or FaissBackend(self.index_dir)  # dreamstream.index.backend: Faiss folders or Milvus
        self.versions: dict[str, Any] = {}
        self.refusals = Refusals()  # a refused version is not re-read until its files change

    def refresh(self) -> None:
        """Load each namespace's CURRENT if it changed; a version that fails to load leaves the previous one in use."""
        for ns in self.namespaces:
            try:
                loaded = self.backend.load(ns, self.versions.get(ns), self.refusals)
            except IndexCorruptError as err:
                log.error("namespace=%r index not loaded (previous version stays): %s", ns, err)
                continue
            if loaded is not None:
                self.versions[ns] = loaded
                log.info("namespace=%r index version=%s items=%d loaded", ns, loaded.name, loaded.manifest.items)

    def rank(self, namespace: str, record: Mapping[str, Any], k: int) -> list[str]:
        """The top-``k`` ids for a record (:data:`dreamstream.monitor.Ranker`); LookupError without an index."""
        version = self.versions.get(namespace)
        if version is None:
            raise LookupError(f"no index version of namespace {namespace!r} loaded")
        return top_k(version, record, k)


class RecordFollower:
    """Every partition of each monitored namespace's ``user-embeddings`` topic, from the beginning."""

    def __init__(self, settings: Settings, namespaces: Sequence[str]) -> None:
        from kafka import KafkaConsumer

        self.topics = {settings.in_namespace(ns).topic(USER_EMBEDDINGS): ns for ns in namespaces}
        with broker_bootstrap(settings.broker):
            self.consumer = KafkaConsumer(**kafka_python_options(settings), group_id=None, enable_auto_commit=False,
                                          client_id="dreamstream-monitor-records", max_poll_records=20_000)
        self.assigned: list[Any] = []
        self.ends: dict[Any, int] = {}  # end offsets when each partition was attached: "caught up" means past them
        self.attach()

    def attach(self) -> list[str]:
        """Assign the partitions of topics that exist now and are not assigned yet; returns the namespaces attached."""
        from kafka import TopicPartition

        have = {tp.topic for tp in self.assigned}
        new = []
        for topic in self.topics:
            if topic not in have:
                new += [TopicPartition(topic, p) for p in sorted(self.consumer.partitions_for_topic(topic) or ())]
        if not new:
            return []
        self.assigned += new
        self.consumer.assign(self.assigned)
        self.consumer.seek_to_beginning(*new)
        self.ends.update(self.consumer.end_offsets(new))
        attached = sorted({self.topics[tp.topic] for tp in new})
        log.info("following user-embeddings of namespaces=%s", attached)
        return attached

    def missing(self) -> list[str]:
        """Monitored namespaces whose topic is not there (yet)."""
        have = {tp.topic for tp in self.assigned}
        return [ns for topic, ns in self.topics.items() if topic not in have]

    def caught_up(self) -> bool:
        """Read everything that was on the assigned partitions when they were attached."""
        return all(self.consumer.position(tp) >= end for tp, end in self.ends.items())

    def poll(self, timeout_s: float) -> list[tuple[str, Any]]:
        """(namespace, raw record) read within ``timeout_s``."""
        if not self.assigned:
            time.sleep(timeout_s)
            return []
        batches = self.consumer.poll(timeout_ms=int(timeout_s * 1000))
        return [(self.topics[tp.topic], rec) for tp, records in batches.items() for rec in records]

    def close(self) -> None:
        self.consumer.close()


class MonitorService:
    """The sidecar: follows records and events, scores, exports metrics and the status file until stopped."""

    def __init__(self, settings: Settings, options: MonitorOptions, metrics: MonitorMetrics | None = None) -> None:
        from kafka import KafkaConsumer

        self.settings, self.options = settings, options
        self.namespaces = monitored_namespaces(settings.index_dir, options.namespaces)
        self.metrics = metrics or MonitorMetrics(bind=settings.web_bind)
        from dreamstream.index.backend import index_backend

        self.indexes = SpaceIndexes(settings.index_dir, self.namespaces, index_backend(settings))
        self.monitor = Monitor(self.namespaces, self.indexes.rank, options.k, options.delay_s, options.window,
                               options.max_users)
        for ns in self.namespaces:  # every monitored namespace is in /metrics from the start, at 0
            self.metrics.events.labels(ns)
            self.metrics.hits.labels(ns)
        self.records = RecordFollower(settings, self.namespaces)
        try:
            with broker_bootstrap(settings.broker):
                self.events = KafkaConsumer(
                    **kafka_python_options(settings), group_id=f"{settings.topic_prefix}dreamstream-monitor",
                    client_id="dreamstream-monitor", auto_offset_reset="earliest" if options.from_earliest else "latest",
                    enable_auto_commit=True, max_poll_records=5_000)
        except BaseException:
            self.records.close()
            raise
        self.events_topic = settings.topic(WATCH_EVENTS)
        self.attach_events()
        self._warned: dict[tuple[str, str], int] = {}
        log.info("monitoring namespaces=%s sample=%g k=%d window=%d max_users=%d", self.namespaces, options.sample,
                 options.k, options.window, options.max_users)

    def attach_events(self) -> bool:
        """Read every watch-events partition (once the topic exists); True when they are assigned.

        Manual assignment, not group membership: the group only keeps the
        committed offsets (where a restart resumes, and the lag a dashboard
        shows). Joining it would make every start wait out a rebalance
        (~20 s on the embedded broker), and one monitor reads every partition anyway.
        """
        from kafka import TopicPartition

        if self.events.assignment():
            return True
        partitions = self.events.partitions_for_topic(self.events_topic)
        if not partitions:
            log.warning("topic %s does not exist yet; watching for it", self.events_topic)
            return False
        self.events.assign([TopicPartition(self.events_topic, p) for p in sorted(partitions)])
        return True

    # --- input ------------------------------------------------------------------------------------------------------
    def _invalid(self, source: str, reason: str, detail: str) -> None:
        self.metrics.invalid.labels(source, reason).inc()
        seen = self._warned[(source, reason)] = self._warned.get((source, reason), 0) + 1
        (log.warning if seen <= WARN_PER_REASON else log.debug)("skipped source=%s reason=%s detail=%s", source, reason,
                                                                 detail[:200])

    def poll_records(self, timeout_s: float) -> int:
        """Hold the records read within ``timeout_s``; returns how many were read."""
        read = self.records.poll(timeout_s)
        for ns, rec in read:
            if rec.value is None:
                continue  # a tombstone: the user's older record stays, harmless for pairing
            source = rec.topic
            try:
                value = codec.unpack(rec.value)
            except Exception as err:  # msgpack raises several unrelated types on garbage
                self._invalid(source, "not-msgpack", f"{type(err).__name__}: {err}")
                continue
            try:
                held = held_record(value)
            except ValueError as err:
                self._invalid(source, "invalid-record", str(err))
                continue
            if str(value.get("space") or "") != ns:
                self._invalid(source, "wrong-space", f"record of space {value.get('space')!r} on namespace {ns!r}")
                continue
            self.monitor.on_record(ns, held)
        return len(read)

    def poll_events(self, timeout_s: float, now: float) -> int:
        """Queue the sampled positive events read within ``timeout_s``; returns how many messages were read."""
        from streams.domain.validate import decode_message

        if not self.events.assignment():
            time.sleep(timeout_s)
            return 0
        batches = self.events.poll(timeout_ms=int(timeout_s * 1000))
        now_ms = int(time.time() * 1000)
        count = 0
        for records in batches.values():
            for rec in records:
                count += 1
                events, rejections = decode_message(rec.key, rec.value, now_ms, rec.partition, rec.offset)
                for rejection in rejections:
                    self._invalid(rec.topic, rejection.label, rejection.reason)
                for ev in events:
                    if to_score(ev.kind, ev.watch_ms, ev.duration_ms, ev.user, ev.offset, self.settings.skip_ratio,
                                self.options.sample):
                        self.monitor.on_event(WatchEvent(ev.user, ev.video, ev.ts, ev.offset), now)
        return count

    # --- output -----------------------------------------------------------------------------------------------------
    def score(self, now: float) -> list[Outcome]:
        outcomes = self.monitor.score_due(now)
        self.metrics.record(outcomes, self.monitor)
        return outcomes

    def tick(self) -> None:
        """Reload moved indexes, attach topics that appeared, write MONITOR.json."""
        self.indexes.refresh()
        if self.records.missing():
            self.records.attach()
        self.attach_events()
        stats = stats_of(self.monitor, time.time())
        try:
            write_monitor(self.settings.index_dir, stats)
        except OSError as err:  # e.g. a folder where MONITOR.json belongs: metrics go on, the file is said to be stuck
            log.error("cannot write %s (%s); the metrics still update", self.settings.index_dir / STATUS, err)
        log.info("status %s", " ".join(f"ns={ns!r}:events={s.events},hits={s.hits},hitrate={s.hitrate}"
                                       for ns, s in stats.items()))

    def catch_up(self, stop: threading.Event) -> None:
        """Read the user-embeddings topics to their end at start before any event is paired."""
        started = time.monotonic()
        while not stop.is_set() and not self.records.caught_up():
            self.poll_records(0.2)
        held = sum(len(users) for users in self.monitor.records.values())
        log.info("user-embeddings caught up in %.1f s: %d user records held", time.monotonic() - started, held)

    def run(self, stop: threading.Event) -> None:
        """Until ``stop`` is set: follow both streams, score due events, and tick every status interval."""
        self.indexes.refresh()
        if self.records.missing():
            log.warning("no user-embeddings topic yet for namespaces=%s (attached when it appears)", self.records.missing())
        self.catch_up(stop)
        next_tick = 0.0
        while not stop.is_set():
            self.poll_records(0.02)
            self.poll_events(0.2, time.monotonic())
            self.score(time.monotonic())
            if time.monotonic() >= next_tick:
                self.tick()
                next_tick = time.monotonic() + self.options.status_interval_s
        self.tick()  # the last counts; events still waiting for their delay are dropped, not scored half-paired

    def close(self) -> None:
        for consumer in (self.events, self.records):
            try:
                consumer.close()
            except Exception as err:  # closing must not hide the reason we are closing
                log.warning("closing a consumer failed: %s", err)
