"""Soak: steady load at a fixed rate for minutes; throughput, p99 latency and worker RSS over time.

Why: the failures that matter in a long-running stream worker - memory that
creeps up per batch, latency that degrades as tables grow, a consumer that
slowly stops - do not show in a 30-second benchmark. The soak feeds a fixed
rate of events over a fixed user population (so the state size is bounded
and memory must level off), samples the worker's resident set size from
``/proc/<pid>/status`` every few seconds, measures each event's latency
(send -> first record of its user whose ``seq`` covers it), and reports per
window: events/s out, p50/p99 latency, RSS. Memory is judged by the slope
of RSS over the second half of the run (after warm-up), in MB per hour.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from dreamstream import codec
from dreamstream.bench import harness as h
from dreamstream.bench.worker_stages import scrape, summary
from dreamstream.kafka.security import aiokafka_options
from dreamstream.settings import Settings
from dreamstream.topics import USER_EMBEDDINGS, WATCH_EVENTS, create_topics


def rss_mb(pid: int) -> float | None:
    """Resident set size of a process in MB (VmRSS of /proc/<pid>/status); None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class Window:
    t: float  # seconds since the load started (end of window)
    events_out: float  # events/s covered by records in this window
    p50_ms: float | None
    p99_ms: float | None
    rss_mb: float | None
    broker_rss_mb: float | None = None  # the embedded broker's, when the soak started it


@dataclass
class SoakReport:
    minutes: float
    rate: float
    users: int
    sent: int
    applied: int
    throughput: float  # events/s over the whole run
    p50_ms: float
    p99_ms: float
    rss_start_mb: float
    rss_end_mb: float
    rss_slope_mb_per_h: float  # over the second half
    windows: list[Window] = field(default_factory=list)
    stages: str | None = None  # the worker's per-stage p99s per batch over the soak (dreamstream.bench.worker_stages)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


class _Tracker:
    """Per user: send times of its events in order; the reader turns record seqs into latencies."""

    def __init__(self) -> None:
        self.sent: dict[str, list[float]] = {}
        self.covered: dict[str, int] = {}
        self.done: list[tuple[float, float]] = []  # (arrival wall time, latency s)
        self.lock = threading.Lock()

    def on_send(self, user: str, t: float) -> None:
        with self.lock:
            self.sent.setdefault(user, []).append(t)

    def on_record(self, user: str, seq: int, t: float) -> None:
        with self.lock:
            sent = self.sent.get(user, [])
            start = self.covered.get(user, 0)
            for n in range(start, min(seq, len(sent))):
                self.done.append((t, t - sent[n]))
            self.covered[user] = max(start, min(seq, len(sent)))


async def _feed(settings: Settings, rate: float, users: int, items: list[str], seconds: float, tracker: _Tracker,
                stop: threading.Event, tick_s: float) -> int:
    """Random watch events over ``users`` at ``rate`` for ``seconds``; each user's send times go to the tracker."""
    rng = np.random.default_rng(5)

    def events():
        for _ in range(int(seconds * rate)):
            u = f"u{int(rng.integers(users))}"
            dur = int(rng.integers(2_000, 60_000))
            e = {"user": u, "video": items[int(rng.integers(len(items)))], "ts": int(time.time() * 1000),
                 "watch_ms": int(rng.uniform(0, 1.6) * dur), "duration_ms": dur}
            yield codec.key_bytes(u), codec.pack(e)

    prod = await h.open_producer(settings)
    try:
        return await h.send_paced(prod, settings.topic(WATCH_EVENTS), events(), rate,
                                  on_due=lambda key, t: tracker.on_send(key.decode("utf-8"), t), tick_s=tick_s, stop=stop)
    finally:
        await prod.stop()


async def _read(settings: Settings, tracker: _Tracker, stop: threading.Event) -> None:
    from aiokafka import AIOKafkaConsumer

    cons = AIOKafkaConsumer(settings.topic(USER_EMBEDDINGS), **aiokafka_options(settings),
                            auto_offset_reset="earliest", enable_auto_commit=False, group_id=None, fetch_max_wait_ms=20)
    await cons.start()
    try:
        while not stop.is_set():
            batches = await cons.getmany(timeout_ms=100, max_records=20000)
            now = time.time()
            for records in batches.values():
                for m in records:
                    rec = codec.unpack(m.value)
                    tracker.on_record(rec["user"], rec["seq"], now)
    finally:
        await cons.stop()


def _windows(tracker: _Tracker, rss: list[tuple[float, float]], t0: float, end: float, width: float,
             broker_rss: list[tuple[float, float]] | None = None) -> list[Window]:
    done = sorted(tracker.done)
    out, i = [], 0

    def mean_in(samples: list[tuple[float, float]] | None, w_end: float) -> float | None:
        mem = [m for t, m in samples or [] if w_end - width < t <= w_end]
        return float(np.mean(mem)) if mem else None

    for w_end in np.arange(t0 + width, end + 1e-9, width):
        lat = []
        while i < len(done) and done[i][0] <= w_end:
            lat.append(done[i][1])
            i += 1
        arr = np.array(lat) * 1000
        out.append(Window(round(w_end - t0, 1), len(lat) / width,
                          float(np.percentile(arr, 50)) if len(arr) else None,
                          float(np.percentile(arr, 99)) if len(arr) else None,
                          mean_in(rss, w_end), mean_in(broker_rss, w_end)))
    return out


def rss_slope_mb_per_hour(rss: list[tuple[float, float]]) -> float:
    """Least-squares slope of RSS over the second half of the samples (warm-up excluded), MB/h."""
    half = rss[len(rss) // 2:]
    if len(half) < 3:
        return float("nan")
    t = np.array([x for x, _ in half])
    m = np.array([y for _, y in half])
    return float(np.polyfit(t - t[0], m, 1)[0] * 3600)


def run(settings: Settings, minutes: float, rate: float, users: int, items: list[str], work: Path,
        progress: Callable[[str], None] = print, window_s: float = 10.0, broker_pid: int | None = None,
        send_interval_s: float = 0.1) -> SoakReport:
    """Start a worker, load it at ``rate`` events/s for ``minutes``, and measure (topics are created here).

    ``broker_pid``: an embedded broker's process, whose memory is sampled
    too, so a reader can tell the worker's curve from the broker's.
    ``send_interval_s``: the load generator sends what is due this often, as
    one record batch per partition (a producer's linger). Latency is timed
    from each event's due time, so it includes this wait. tansu's fetch cost
    grows with the number of stored batches, so a longer interval keeps the
    embedded broker healthy for longer.
    """
    create_topics(settings)
    worker = h.WorkerProcess(settings, work / "soak-worker.log").start()
    tracker, stop = _Tracker(), threading.Event()
    rss: list[tuple[float, float]] = []
    broker_rss: list[tuple[float, float]] = []
    reader = threading.Thread(target=asyncio.run, args=(_read(settings, tracker, stop),), daemon=True)
    reader.start()
    try:
        warm = h.synthetic_events(1, 1, items)
        warm[0]["user"] = "__warmup__"
        h.produce_sync(settings, settings.topic(WATCH_EVENTS), h.event_messages(warm))
        h.read_records(settings, {"__warmup__": 1}, timeout_s=120)
        warm_stages = scrape(settings.web_port)
        progress(f"soak: worker serving; {rate:.0f} events/s over {users} users for {minutes:g} min")
        sent: list[int] = []
        feeder = threading.Thread(target=lambda: sent.append(asyncio.run(
            _feed(settings, rate, users, items, minutes * 60, tracker, stop, send_interval_s))), daemon=True)
        t0 = time.time()
        feeder.start()
        next_report = t0 + 60
        while feeder.is_alive():
            m = rss_mb(worker.proc.pid)
            if m is None:
                raise RuntimeError(f"the worker died during the soak; see {worker.log_path}")
            rss.append((time.time(), m))
            b = rss_mb(broker_pid) if broker_pid else None
            if b is not None:
                broker_rss.append((time.time(), b))
            if time.time() >= next_report:
                lat = [x for t, x in tracker.done if t > time.time() - 60]
                progress(f"soak {int((time.time() - t0) / 60)} min: worker rss {m:.0f} MB"
                         + (f" (broker {b:.0f} MB)" if b is not None else "") + ", "
                         f"p99 {np.percentile(lat, 99) * 1000 if lat else float('nan'):.0f} ms, {len(lat) / 60:.0f} events/s")
                next_report += 60
            time.sleep(2.0)
        feeder.join()
        deadline = time.time() + 60
        while len(tracker.done) < sent[0] and time.time() < deadline:
            time.sleep(0.2)
        end = time.time()
        end_stages = scrape(settings.web_port)
        stages = summary(end_stages.minus(warm_stages)) if end_stages and warm_stages else None
    finally:
        stop.set()
        reader.join(10)
        worker.stop()
    lat = np.array([x for _, x in tracker.done]) * 1000
    rss_rel = [(t - t0, m) for t, m in rss]
    return SoakReport(
        minutes=minutes, rate=rate, users=users, sent=sent[0], applied=len(tracker.done),
        throughput=len(tracker.done) / max(1e-9, (max(t for t, _ in tracker.done) - t0) if tracker.done else 1),
        p50_ms=float(np.percentile(lat, 50)), p99_ms=float(np.percentile(lat, 99)),
        rss_start_mb=rss[0][1], rss_end_mb=rss[-1][1], rss_slope_mb_per_h=rss_slope_mb_per_hour(rss_rel),
        windows=_windows(tracker, rss, t0, end, window_s, broker_rss), stages=stages,
    )


def plot(report: SoakReport, path: Path) -> Path:
    """Three stacked panels over time: events/s out, p50/p99 latency, worker RSS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ws = report.windows
    t = [w.t / 60 for w in ws]
    fig, ax = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    ax[0].plot(t, [w.events_out for w in ws])
    ax[0].axhline(report.rate, ls="--", c="grey", lw=0.8)
    ax[0].set_ylabel("events/s out")
    ax[1].plot(t, [w.p50_ms if w.p50_ms is not None else np.nan for w in ws], label="p50")
    ax[1].plot(t, [w.p99_ms if w.p99_ms is not None else np.nan for w in ws], label="p99")
    ax[1].set_ylabel("latency (ms)")
    ax[1].legend()
    ax[2].plot(t, [w.rss_mb if w.rss_mb is not None else np.nan for w in ws], label="worker")
    if any(w.broker_rss_mb is not None for w in ws):
        ax[2].plot(t, [w.broker_rss_mb if w.broker_rss_mb is not None else np.nan for w in ws], label="embedded broker (tansu)")
        ax[2].legend()
    ax[2].set_ylabel("RSS (MB)")
    ax[2].set_xlabel("minutes")
    fig.suptitle(f"soak: {report.rate:.0f} events/s, {report.users} users, {report.minutes:g} min; "
                 f"RSS slope {report.rss_slope_mb_per_h:+.1f} MB/h")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def soak_command(settings: Settings, minutes: float, rate: float, users: int, work: Path,
                 echo: Callable[[str], None] = print, broker_pid: int | None = None,
                 send_interval_s: float = 0.1) -> SoakReport:
    """What `dreamstream bench --soak MINUTES` runs (settings already point at a broker and a bundle)."""
    import uuid

    from dreamstream.broker import free_port
    from dreamstream.bundle import latest_version, load_bundle

    bundle = load_bundle(latest_version(settings.model_dir))
    s = settings.model_copy(update={"topic_prefix": f"soak{uuid.uuid4().hex[:6]}.", "web_port": free_port(),
                                    "state_dir": work / "soak-state", "cold_min_positive": 0})
    create_topics(s)
    h.publish_items(s, bundle.item_ids, bundle.items, model=bundle.version)
    report = run(s, minutes, rate, users, list(bundle.item_ids), work, progress=echo, broker_pid=broker_pid,
                 send_interval_s=send_interval_s)
    (work / "soak.json").write_text(report.to_json())
    png = plot(report, work / "soak.png")
    echo(f"soak {minutes:g} min at {rate:.0f} events/s over {users} users: {report.applied}/{report.sent} events applied, "
         f"throughput {report.throughput:,.0f} events/s, latency p50 {report.p50_ms:.0f} ms p99 {report.p99_ms:.0f} ms, "
         f"RSS {report.rss_start_mb:.0f} -> {report.rss_end_mb:.0f} MB (slope {report.rss_slope_mb_per_h:+.1f} MB/h "
         f"over the second half); plot {png}; numbers {work / 'soak.json'}")
    if report.stages:
        echo(f"  {report.stages}")
    return report
