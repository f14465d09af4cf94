"""Cost against size: the real worker on a catalogue of V videos and a user base of U users, per size point.

Why: what a platform team asks first is how memory, start-up time,
throughput and latency move as the catalogue and the user base grow. Each
point runs on a fresh embedded broker (``RunBrokers``) with the design's
topics, the real worker process and the bench harness's producers and
readers; video popularity is Zipf (micro-video traffic is heavy-headed:
a few videos take most of the watches).

A point, in order:

1. publish V item vectors (random unit vectors of the bundle's width);
2. queue one probe user per partition, then one event for each of the U
   users (users in random order, videos Zipf);
3. **cold start**: launch a worker on an empty state folder; seconds from
   launch until every probe has its record (catalogue read, group joined,
   first batch applied);
4. **sustained events/s**: the U events over the span of their records'
   write times (the worker's producer timestamps, so the reader is not timed);
5. **memory**: the worker's RSS just before its first record (catalogue
   loaded) and after the last (U users' rows); per video against a worker
   with a one-video catalogue measured once per run, per user as the
   difference of the two; the changelog's bytes per user from its partition 0;
6. **p99 event -> record**: a paced load at a fraction of the sustained
   rate over the same users for some seconds (``dreamstream bench``'s latency bookkeeping);
7. **warm start**: SIGTERM, a new worker on the same state folder; seconds
   from launch until new probes are served.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from dreamstream import codec
from dreamstream.bench import harness as h
from dreamstream.bench.broker_cost import folder_mb
from dreamstream.bench.recovery import probe_users
from dreamstream.bench.run_brokers import RunBrokers
from dreamstream.bench.soak import rss_mb
from dreamstream.kafka.security import aiokafka_options
from dreamstream.settings import Settings
from dreamstream.topics import ITEM_VECTORS, USER_EMBEDDINGS, WATCH_EVENTS, create_topics

MB = 1024 * 1024


@dataclass
class ScalePoint:
    """One size's measurements (None: not measured; ``extrapolated`` rows are computed, not run)."""

    videos: int
    users: int
    extrapolated: bool = False
    item_store: str = ""  # e.g. "rocksdb float32 1024 MiB"
    publish_s: float | None = None  # V item vectors onto item-vectors
    worker_base_mb: float | None = None  # a worker serving a one-video catalogue
    worker_items_mb: float | None = None  # RSS with the catalogue loaded, before the first record
    worker_users_mb: float | None = None  # RSS after every user's first record
    bytes_per_video: float | None = None
    bytes_per_user: float | None = None  # worker RSS delta per user
    changelog_bytes_per_user: float | None = None  # key + value bytes of partition 0 of the changelog / its users
    item_disk_bytes_per_video: float | None = None  # the rocksdb item store's folder / videos
    state_disk_bytes_per_user: float | None = None  # the user-state table's RocksDB folder / users
    record_bytes: float | None = None  # mean user-embeddings value (Kafka throughput per topic)
    event_bytes: float | None = None  # mean watch-events value
    broker_mb_items: float | None = None  # embedded broker RSS after the catalogue was published
    broker_mb_end: float | None = None
    cold_start_s: float | None = None
    warm_start_s: float | None = None
    events_per_s: float | None = None
    paced_rate: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    # where the sustained run's time went (the broker and the worker share the box: say which part is whose)
    worker_cpu_us_per_event: float | None = None  # the worker process's CPU over the run's span / events
    broker_cpu_us_per_event: float | None = None  # the embedded broker's (tansu's) CPU over the same span / events
    box_busy: float | None = None  # share of all cores busy over the span (every process, the other sessions' too)
    loop_us_per_event: float | None = None  # the worker's batch loop working (stages decode..send, flush encode) / events
    fetch_wait_share: float | None = None  # share of the batch loop spent waiting for the broker's fetch
    item_cache_hit: float | None = None  # share of the run's item lookups served from RAM (rocksdb: the hot cache)
    item_lookup_us_per_event: float | None = None  # the worker's time in item-store lookups / events (its /metrics)
    warm_phases: dict[str, float] = field(default_factory=dict)  # warm start: seconds from launch to each milestone
    notes: list[str] = field(default_factory=list)


def zipf_ranks(rng: np.random.Generator, n: int, videos: int, exponent: float) -> np.ndarray:
    """``n`` video ranks in 0..videos-1, P(rank k) proportional to 1/(k+1)**exponent (numpy's zipf needs exponent > 1)."""
    weights = np.arange(1, videos + 1, dtype=np.float64) ** -exponent
    cdf = np.cumsum(weights)
    return np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1]), videos - 1)


def catalogue(videos: int, dim: int, model: str, chunk: int = 50_000, seed: int = 3) -> Iterator[list[tuple[bytes, bytes]]]:
    """item-vectors messages for videos ``v0 .. v{videos-1}`` (random unit vectors), a chunk at a time."""
    rng = np.random.default_rng(seed)
    ts = int(time.time() * 1000)
    for lo in range(0, videos, chunk):
        x = rng.standard_normal((min(chunk, videos - lo), dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        yield [(codec.key_bytes(f"v{lo + i}"), codec.pack(codec.item_vector_record(f"v{lo + i}", v, model, ts)))
               for i, v in enumerate(x)]


def publish_catalogue(settings: Settings, videos: int, dim: int, model: str, progress: Callable[[str], None]) -> float:
    """Put ``videos`` item vectors on item-vectors as whole record batches; returns the seconds it took."""
    from streams.kafka.batch_send import send_records

    async def run() -> None:
        prod = await h.open_producer(settings)
        try:
            sent, step, t0 = 0, max(1, videos // 10), time.monotonic()
            for msgs in catalogue(videos, dim, model):
                await asyncio.gather(*(b.future for b in await send_records(
                    prod, settings.topic(ITEM_VECTORS), [(k, v, None) for k, v in msgs])))
                if (sent + len(msgs)) // step > sent // step:
                    progress(f"  published {sent + len(msgs):,} / {videos:,} videos ({time.monotonic() - t0:.0f} s)")
                sent += len(msgs)
        finally:
            await prod.stop()
    t0 = time.monotonic()
    asyncio.run(run())
    return time.monotonic() - t0


def user_events(users: int, videos: int, exponent: float, seed: int, prefix: str = "u") -> list[tuple[bytes, bytes]]:
    """One watch event per user (users in random order, videos Zipf by rank), as keyed messages."""
    rng = np.random.default_rng(seed)
    order, ranks = rng.permutation(users), zipf_ranks(rng, users, videos, exponent)
    ts = int(time.time() * 1000) - users
    return [(codec.key_bytes(f"{prefix}{u}"), codec.pack({"user": f"{prefix}{u}", "video": f"v{r}", "ts": ts + i,
                                                          "watch_ms": 7_000, "duration_ms": 10_000}))
            for i, (u, r) in enumerate(zip(order.tolist(), ranks.tolist()))]


def paced_events(n: int, users: int, videos: int, exponent: float, seed: int) -> list[dict[str, Any]]:
    """``n`` events over existing users ``u0 ..`` (uniform) and Zipf videos, for the latency run."""
    rng = np.random.default_rng(seed)
    who, ranks = rng.integers(0, users, n), zipf_ranks(rng, n, videos, exponent)
    ratio = rng.uniform(0.0, 1.6, n)
    ts = int(time.time() * 1000)
    return [{"user": f"u{u}", "video": f"v{r}", "ts": ts + i, "watch_ms": int(10_000 * q), "duration_ms": 10_000}
            for i, (u, r, q) in enumerate(zip(who.tolist(), ranks.tolist(), ratio.tolist()))]


class ProcSampler:
    """The worker's RSS and the worker's, the broker's and the box's CPU seconds every ``period_s``, in a thread.

    Why CPU: the worker and the embedded broker share the box's cores, so a
    sustained rate alone cannot say whose cost grew with the catalogue; CPU
    seconds per event of each process can.
    """

    def __init__(self, pid: int, broker_pid: int | None = None, period_s: float = 0.25) -> None:
        self.pid, self.broker_pid, self.period_s = pid, broker_pid, period_s
        self.samples: list[tuple[float, float]] = []  # (wall time, worker RSS MB)
        self.cpu: list[tuple[float, float, float, float]] = []  # (wall time, worker s, broker s, box busy core-s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from dreamstream.bench.cpu_share import machine_busy_seconds, process_cpu_seconds

        while not self._stop.is_set():
            mb, now = rss_mb(self.pid), time.time()
            if mb is None:
                return
            self.samples.append((now, mb))
            broker = process_cpu_seconds(self.broker_pid) if self.broker_pid else None
            box = machine_busy_seconds()
            self.cpu.append((now, process_cpu_seconds(self.pid) or 0.0, broker or 0.0, box[0] if box else 0.0))
            self._stop.wait(self.period_s)

    def cpu_between(self, t0: float, t1: float) -> tuple[float, float, float] | None:
        """(worker, broker, box busy) CPU seconds between wall times ``t0`` and ``t1``, interpolated between samples."""
        if len(self.cpu) < 2 or t1 <= t0:
            return None
        times = np.array([c[0] for c in self.cpu])
        cols = np.array([c[1:] for c in self.cpu])
        at = [np.interp(t, times, cols[:, j]) for t in (t0, t1) for j in range(3)]
        return at[3] - at[0], at[4] - at[1], at[5] - at[2]

    def start(self) -> "RssSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def before(self, t: float) -> float | None:
        """The last sample taken before ``t``."""
        earlier = [mb for ts, mb in self.samples if ts < t]
        return earlier[-1] if earlier else None


def _read_users(settings: Settings, want: set[str] | int, timeout_s: float, start: dict[int, int] | None,
                progress: Callable[[str], None], label: str, sizes: list[int] | None = None) -> h.Collected:
    """user-embeddings until the users of ``want`` (or that many users) have a record; progress every 15 s.

    ``sizes`` gets each record's value size (bytes), sampled every 100th.
    """
    state = {"next": time.monotonic() + 15, "n": 0}

    def decode(value: bytes) -> dict[str, Any]:
        state["n"] += 1
        if sizes is not None and state["n"] % 100 == 1:
            sizes.append(len(value))
        return h.slim_record(value)

    def done(col: h.Collected) -> bool:
        if time.monotonic() > state["next"]:
            state["next"] = time.monotonic() + 15
            progress(f"  {label}: {len(col.latest):,} users have a record")
        return len(col.latest) >= want if isinstance(want, int) else want <= col.latest.keys()
    return asyncio.run(h.read_until(settings, settings.topic(USER_EMBEDDINGS), done, timeout_s, decode=decode,
                                    start=start))


def catalogue_loaded_at(log: Path) -> float | None:
    """Wall time of the worker's "item table caught up" line (its log's local time), None if it has none yet."""
    import datetime as dt
    import re

    for line in log.read_text(errors="replace").splitlines():
        if "item table caught up" in line:
            m = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})", line)
            if m:
                return dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(m.group(2)) / 1000
    return None


def _probes(settings: Settings, tag: str) -> list[str]:
    """One new user per partition, each with one event queued on watch-events (video v0, the most watched)."""
    users = list(probe_users(settings.partitions, prefix=f"{tag}-").values())
    ts = int(time.time() * 1000)
    h.produce_sync(settings, settings.topic(WATCH_EVENTS), h.event_messages(
        [{"user": u, "video": "v0", "ts": ts, "watch_ms": 9_000, "duration_ms": 10_000} for u in users]))
    return users


def _served_after(col: h.Collected, users: list[str], t0: float) -> float | None:
    """Seconds from ``t0`` until the last of ``users`` had its first record read (None if one never came)."""
    firsts = [min((t for _, t in col.arrivals.get(u, [])), default=None) for u in users]
    return None if None in firsts else max(firsts) - t0


def changelog_bytes(settings: Settings, partition: int = 0) -> tuple[int, int]:
    """(key + value bytes of each key's last row, distinct keys) of one partition of the user-state changelog.

    The last row per key is what a compacted changelog keeps (and what a
    recovery reads on Kafka); tansu does not compact, so older rows are not counted.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topic = f"{settings.app_id}-user-state-changelog"  # Faust's name for the table's changelog

    async def run() -> tuple[int, int]:
        cons = AIOKafkaConsumer(**aiokafka_options(settings), group_id=None, enable_auto_commit=False,
                                fetch_max_wait_ms=100)
        await cons.start()
        try:
            tp = TopicPartition(topic, partition)
            cons.assign([tp])
            await cons.seek_to_beginning(tp)
            last: dict[bytes | None, int] = {}
            idle = 0
            while idle < 5:  # the high watermark is the fetch's, not ListOffsets' (tansu answers that one batch short)
                got = await cons.getmany(tp, timeout_ms=500, max_records=20_000)
                records = got.get(tp, [])
                idle = 0 if records else idle + 1
                for m in records:
                    last[m.key] = len(m.key or b"") + len(m.value or b"")
                high = cons.highwater(tp)
                if high is not None and await cons.position(tp) >= high:
                    break
            return sum(last.values()), len(last)
        finally:
            await cons.stop()
    return asyncio.run(run())


def baseline_rss(brokers: RunBrokers, dim: int, model: str, progress: Callable[[str], None]) -> float:
    """RSS (MB) of a worker serving a one-video catalogue and a probe user per partition: the zero of every delta."""
    s = brokers.fresh("baseline")
    create_topics(s)
    publish_catalogue(s, 1, dim, model, lambda _: None)
    probes = _probes(s, "base")
    log = brokers.work / "baseline.log"
    w = h.WorkerProcess(s, log).start()
    rss = ProcSampler(w.proc.pid).start()
    try:
        col = _read_users(s, set(probes), 180, None, progress, "baseline")
        if _served_after(col, probes, 0.0) is None:
            raise RuntimeError(f"the baseline worker served nothing; see {log}")
        time.sleep(1.0)
        loaded = catalogue_loaded_at(log)
        # the same milestone as a point's catalogue RSS (run_point): catalogue in, no batch yet. Sampled after the
        # first batch instead, the zero held ONNX's grown arenas and exceeded small catalogues' RSS (136 vs 130 MB).
        at_load = rss.before(loaded + 0.1) if loaded is not None else None
        return at_load or rss_mb(w.proc.pid) or 0.0
    finally:
        rss.stop()
        w.stop(60)


def run_point(brokers: RunBrokers, videos: int, users: int, dim: int, model: str, base_mb: float, *,
              exponent: float = 1.0, paced_fraction: float = 0.5, latency_seconds: float = 10.0,
              timeout_s: float = 900, progress: Callable[[str], None] = print) -> ScalePoint:
    """Measure one size (see the module docstring for the steps)."""
    from dreamstream.commands.bench import _latencies  # the latency bookkeeping `dreamstream bench` reports with

    tag = _new_tag(brokers.work, f"v{videos}-u{users}")
    s = brokers.fresh(tag)
    s = s.model_copy(update={"store": s.store if s.store.startswith("rocksdb") else "rocksdb://"})
    point = ScalePoint(videos, users, worker_base_mb=base_mb,
                       item_store=f"{s.item_store} {s.item_dtype} {s.item_cache_mb} MiB")
    create_topics(s)
    broker0 = rss_mb(brokers.pid) if brokers.pid else None
    progress(f"[{tag}] publishing {videos:,} videos ...")
    point.publish_s = publish_catalogue(s, videos, dim, model, progress)
    point.broker_mb_items = rss_mb(brokers.pid) if brokers.pid else None
    progress(f"[{tag}] {videos:,} videos in {point.publish_s:.0f} s"
             + (f"; broker RSS {broker0:.0f} -> {point.broker_mb_items:.0f} MB" if broker0 and point.broker_mb_items else ""))
    probes = _probes(s, "cold")
    events = user_events(users, videos, exponent, seed=users)
    point.event_bytes = sum(len(v) for _, v in events) / len(events)
    h.produce_sync(s, s.topic(WATCH_EVENTS), events)
    del events
    progress(f"[{tag}] {users:,} user events queued; cold start ...")

    log = brokers.work / f"{tag}-cold.log"
    t0 = time.time()
    w = h.WorkerProcess(s, log).start()
    rss = ProcSampler(w.proc.pid, brokers.pid).start()
    try:
        sizes: list[int] = []
        col = _read_users(s, users + len(probes), timeout_s + users / 500, None, progress, "cold run", sizes)
        point.record_bytes = sum(sizes) / len(sizes) if sizes else None
        point.cold_start_s = _served_after(col, probes, t0)
        mine = [ts for u, ts in col.written.items() if not u.startswith("cold-")]
        if len(col.latest) < users + len(probes) or not mine:
            point.notes.append(f"only {len(col.latest):,} of {users + len(probes):,} users served within the timeout; see {log}")
            return point
        first, last = min(t[0] for t in mine), max(t[-1] for t in mine)
        point.events_per_s = users / (last - first) if last > first else None
        time.sleep(2.0)  # the last rows reach the store
        _where_time_went(point, rss.cpu_between(first, last), s.web_port, users)
        loaded = catalogue_loaded_at(log) or min(ts[0] for ts in col.written.values())
        point.worker_items_mb = rss.before(loaded + 0.1)  # catalogue in, no batch yet (a first batch grows ONNX's arenas)
        point.worker_users_mb = rss_mb(w.proc.pid)
        if point.worker_items_mb is not None:
            point.bytes_per_video = (point.worker_items_mb - base_mb) * MB / videos
            if point.worker_users_mb is not None:
                point.bytes_per_user = (point.worker_users_mb - point.worker_items_mb) * MB / users
        progress(f"[{tag}] cold start {point.cold_start_s:.1f} s; {point.events_per_s or 0:,.0f} events/s; worker RSS "
                 f"{base_mb:.0f} (1 video) -> {point.worker_items_mb or 0:.0f} (catalogue) -> {point.worker_users_mb or 0:.0f} MB (users)")
        progress(f"[{tag}] per event: worker CPU {point.worker_cpu_us_per_event or 0:.0f} us, broker CPU "
                 f"{point.broker_cpu_us_per_event or 0:.0f} us (box {100 * (point.box_busy or 0):.0f}% busy); worker loop "
                 f"{point.loop_us_per_event or 0:.0f} us working, {100 * (point.fetch_wait_share or 0):.0f}% of it waiting "
                 f"for fetches; item cache hits {100 * (point.item_cache_hit or 0):.1f}%, item lookups "
                 f"{point.item_lookup_us_per_event or 0:.1f} us")
        _paced(s, point, users, videos, exponent, paced_fraction, latency_seconds, _latencies, progress, tag)
    finally:
        rss.stop()
        w.stop(60)
    items_dir = s.item_store_dir or s.state_dir / "items"
    if s.item_store == "rocksdb":
        point.item_disk_bytes_per_video = folder_mb(items_dir) * MB / videos
    point.state_disk_bytes_per_user = folder_mb(s.state_dir / "faust") * MB / users
    changelog, keys = changelog_bytes(s)
    point.changelog_bytes_per_user = changelog / keys if keys else None
    point.warm_start_s, point.warm_phases = _warm_start(s, brokers.work / f"{tag}-warm.log", timeout_s, progress)
    point.broker_mb_end = rss_mb(brokers.pid) if brokers.pid else None
    progress(f"[{tag}] warm start {point.warm_start_s if point.warm_start_s is not None else float('nan'):.1f} s; "
             f"changelog {point.changelog_bytes_per_user or 0:,.0f} B per user (partition 0, {keys:,} users)")
    return point


def _new_tag(work: Path, tag: str) -> str:
    """``tag``, or ``tag-2``, ``-3``... if a point of that size ran before: its own state folder and logs, not the last one's."""
    n = 1
    while (work / f"{tag if n == 1 else f'{tag}-{n}'}-cold.log").exists():
        n += 1
    return tag if n == 1 else f"{tag}-{n}"


def _paced(s: Settings, point: ScalePoint, users: int, videos: int, exponent: float, fraction: float, seconds: float,
           latencies: Callable[..., Any], progress: Callable[[str], None], tag: str) -> None:
    """p50/p99 event -> record at ``fraction`` of the sustained rate, over the existing users (each had seq 1)."""
    if not point.events_per_s or seconds <= 0:
        return
    rate = max(50.0, fraction * point.events_per_s)
    events = paced_events(int(rate * seconds), users, videos, exponent, seed=users + 1)
    expected: dict[str, int] = {}
    for e in events:
        expected[e["user"]] = expected.get(e["user"], 0) + 1
    start = h.end_offsets(s, s.topic(USER_EMBEDDINGS))
    progress(f"[{tag}] latency: {len(events):,} events at {rate:,.0f}/s ...")
    feeder = h.PacedFeed(s, s.topic(WATCH_EVENTS), h.event_messages(events), rate, tick_s=0.02).start()

    def done(col: h.Collected) -> bool:
        return all(col.latest.get(u, {}).get("seq", 0) >= 1 + n for u, n in expected.items())
    col = asyncio.run(h.read_until(s, s.topic(USER_EMBEDDINGS), done, 120 + seconds, decode=h.slim_record, start=start))
    sent_at = feeder.join()
    for user, arrivals in col.arrivals.items():  # every user had one event before: count this run's from 1
        col.arrivals[user] = [(seq - 1, t) for seq, t in arrivals]
    lat = latencies(sent_at, events, col, feeder.handed_at)
    point.paced_rate = rate
    if len(lat.total):
        point.p50_ms, point.p99_ms = (float(np.percentile(1000 * lat.total, q)) for q in (50, 99))
        progress(f"[{tag}] at {rate:,.0f} events/s: p50 {point.p50_ms:.0f} ms, p99 {point.p99_ms:.0f} ms "
                 f"({len(lat.total):,} of {len(events):,} events with a record)")


def _warm_start(s: Settings, log: Path, timeout_s: float,
                progress: Callable[[str], None]) -> tuple[float | None, dict[str, float]]:
    """A restart on the same state folder: seconds from launch until new probes are served, and to each milestone."""
    probes = _probes(s, "warm")
    start = h.end_offsets(s, s.topic(USER_EMBEDDINGS))
    t0 = time.time()
    w = h.WorkerProcess(s, log).start()
    try:
        col = _read_users(s, set(probes), timeout_s, start, progress, "warm start")
        served = _served_after(col, probes, t0)
    finally:
        w.stop(60)
    phases = log_milestones(log, t0)
    if phases:
        progress("  warm start, seconds from launch: " + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()))
    return served, phases


# The worker's log lines that mark a start's phases, in the order they happen (the first line of each kind counts).
MILESTONES = (
    ("logging", "level="),  # the first line: interpreter up, the CLI and its imports loaded
    ("model", "serving model bundle"),  # ONNX sessions loaded
    ("faust_start", "[^Worker]: Starting"),  # Faust's services starting
    ("items_open", "item table reading"),  # the item store opened (its offsets read)
    ("joining", "(Re-)joining group"),  # the consumer group join asked (the broker may hold it: Kafka's initial delay)
    ("joined", "Joined group"),
    ("items_ready", "item table caught up"),  # the item-vectors tail read
    ("assigned", "completing user-state rows"),  # partitions assigned, table recovery done
    ("feed", "feed assigned"),  # rows completed; reading watch-events
    ("first_output", "first output"),  # the first batch's records handed to the producer
)


def log_milestones(log: Path, t0: float) -> dict[str, float]:
    """Seconds from ``t0`` (wall time of the launch) to the first log line of each of :data:`MILESTONES`.

    Lines are ours (``ts=...``) until Faust's worker starts, then Faust's (``[...] [pid] [INFO]``): both stamp the local time.
    """
    import datetime as dt
    import re

    stamp = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})")
    found: dict[str, float] = {}
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return found
    for line in lines:
        m = stamp.search(line)
        if not m:
            continue
        at = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(m.group(2)) / 1000 - t0
        for name, text in MILESTONES:
            if name not in found and text in line:
                found[name] = round(at, 3)
    return {name: found[name] for name, _ in MILESTONES if name in found}


def _where_time_went(point: ScalePoint, cpu: tuple[float, float, float] | None, port: int, events: int) -> None:
    """CPU per event of the worker and the broker over the sustained run, and the worker's own split (its /metrics)."""
    from dreamstream.bench.worker_stages import STAGE_METRIC

    if cpu is not None and events:
        point.worker_cpu_us_per_event = 1e6 * cpu[0] / events
        point.broker_cpu_us_per_event = 1e6 * cpu[1] / events if cpu[1] else None
        if point.events_per_s:
            point.box_busy = cpu[2] / (events / point.events_per_s) / (os.cpu_count() or 1)
    sums = metric_sums(port)
    if not sums:
        return
    stages = {k[1]: v for k, v in sums.items() if k[0] == f"{STAGE_METRIC}_sum"}
    working = sum(stages.get(st, 0.0) for st in ("decode", "apply", "send", "flush_encode"))
    waiting = stages.get("fetch_wait", 0.0)
    applied = sums.get(("dreamstream_events_total", ""), 0.0)
    if applied:
        point.loop_us_per_event = 1e6 * working / applied
    if working + waiting > 0:
        point.fetch_wait_share = waiting / (working + waiting)
    looked = {k[1]: v for k, v in sums.items() if k[0] == "dreamstream_item_lookups_total"}
    if sum(looked.values()):
        point.item_cache_hit = looked.get("cache", 0.0) / sum(looked.values())
        point.item_lookup_us_per_event = 1e6 * sums.get(("dreamstream_item_lookup_seconds_total", ""), 0.0) / sum(looked.values())


def metric_sums(port: int) -> dict[tuple[str, str], float]:
    """(sample name, its stage, result or outcome label) -> value of the worker's /metrics page; {} if unreadable."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5.0) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    return {(sample.name, sample.labels.get("stage") or sample.labels.get("result") or sample.labels.get("outcome")
             or ""): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def extrapolate(measured: list[ScalePoint], videos: int, users: int, why: str) -> ScalePoint:
    """A size that was not run: per-video and per-user costs of the largest measured point, times the size.

    Start-up times scale with the catalogue (the cold start reads it);
    throughput and latency are carried over unchanged (labelled, not measured).
    """
    ref = max(measured, key=lambda p: p.videos)
    p = ScalePoint(videos, users, extrapolated=True, item_store=ref.item_store, worker_base_mb=ref.worker_base_mb,
                   notes=[why])
    if ref.bytes_per_video is not None and ref.worker_base_mb is not None:
        p.bytes_per_video, p.bytes_per_user = ref.bytes_per_video, ref.bytes_per_user
        p.worker_items_mb = ref.worker_base_mb + videos * ref.bytes_per_video / MB
        p.worker_users_mb = p.worker_items_mb + users * (ref.bytes_per_user or 0.0) / MB
    p.changelog_bytes_per_user = ref.changelog_bytes_per_user
    if ref.cold_start_s is not None:
        p.cold_start_s = ref.cold_start_s * videos / ref.videos
    p.events_per_s, p.p99_ms, p.paced_rate = ref.events_per_s, ref.p99_ms, ref.paced_rate
    return p


def fits_here(measured: list[ScalePoint], videos: int, users: int, headroom: float = 1.5) -> tuple[bool, str]:
    """Whether a point's estimated worker + broker memory fits in MemAvailable (a shared box: others need RAM too)."""
    avail = _mem_available_mb()
    if not measured or avail is None:
        return True, ""
    ref = max(measured, key=lambda p: p.videos)
    per_video = (ref.bytes_per_video or 600) + ((ref.broker_mb_items or 0) * MB / ref.videos if ref.videos else 0)
    need = (videos * per_video + users * max(ref.bytes_per_user or 0, 0) * 2) / MB * headroom
    return need < avail, f"needs ~{need:,.0f} MB (x{headroom} headroom), {avail:,.0f} MB available"


def _mem_available_mb() -> float | None:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def table(points: list[ScalePoint]) -> str:
    """The points as a markdown table."""
    def f(x: float | None, fmt: str = ",.0f") -> str:
        return "-" if x is None else format(x, fmt)
    rows = [f"item store: {', '.join(sorted({p.item_store for p in points}))}", "",
            "| videos | users | measured | worker RSS: 1 video / catalogue / + users (MB) | B per video | B per user (RSS) "
            "| changelog B per user | start -> serving cold / warm (s) | events/s | p50 / p99 event -> record (ms) at events/s "
            "| broker RSS (MB) | disk B per video / per user | CPU us per event: worker / broker | item cache hits, lookup us per event |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        rows.append(
            f"| {p.videos:,} | {p.users:,} | {'extrapolated' if p.extrapolated else 'measured'} "
            f"| {f(p.worker_base_mb)} / {f(p.worker_items_mb)} / {f(p.worker_users_mb)} | {f(p.bytes_per_video)} "
            f"| {f(p.bytes_per_user)} | {f(p.changelog_bytes_per_user)} | {f(p.cold_start_s, '.1f')} / {f(p.warm_start_s, '.1f')} "
            f"| {f(p.events_per_s)} | {f(p.p50_ms)} / {f(p.p99_ms)} at {f(p.paced_rate)} | {f(p.broker_mb_end or p.broker_mb_items)} "
            f"| {f(p.item_disk_bytes_per_video)} / {f(p.state_disk_bytes_per_user)} "
            f"| {f(p.worker_cpu_us_per_event)} / {f(p.broker_cpu_us_per_event)} "
            f"| {'-' if p.item_cache_hit is None else format(100 * p.item_cache_hit, '.1f') + '%'}, "
            f"{f(p.item_lookup_us_per_event, '.1f')} |")
    return "\n".join(rows)


def to_json(points: list[ScalePoint]) -> list[dict[str, Any]]:
    return [asdict(p) for p in points]
