"""`dreamstream bench`: the stream worker's throughput and latency next to a plain per-event Faust agent."""
from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from dreamstream.bench.cpu_share import CpuShare, busy_share, machine_busy_seconds
from dreamstream.bench.goals import HALF_LIVE, HALF_PRELOADED, TENTH_LIVE, BenchResults, LatencyAt, render, verdicts
from dreamstream.bench.latency_curve import FRACTIONS, plot, table
from dreamstream.bench.live_max import latency_slope, p99_by_part, search_live_max
from dreamstream.bench.run_brokers import RunBrokers
from dreamstream.bench.worker_stages import Snapshot, scrape, summary
from dreamstream.cli_options import settings_options
from dreamstream.settings import Settings


# The longest soak the embedded broker holds without becoming the measurement: 10 minutes at 200 events/s
# (2026-11-24: p99 154 ms at minute 1, 1.5 s at minute 9, broker RSS 1.1 GB; docs/scaling.md#development-broker).
SOAK_EVENTS_ON_TANSU = 120_000


def _onnx_cost(bundle, batch: int, repeats: int = 200) -> tuple[float, float]:
    """Microseconds per event of dreamumm_step + opal_step at a batch size, run as the worker runs them: (median, best) round.

    Both, because the box is shared: the median is what the worker meets on
    a busy box, the best round what the arithmetic costs when nothing else
    runs (``timeit``'s reading: other processes only ever add time).
    """
    from streams.domain.onnx_steps import run_chunked

    m = bundle.manifest
    rng = np.random.default_rng(0)
    item = rng.standard_normal((batch, m.dim)).astype(np.float32)
    item /= np.linalg.norm(item, axis=1, keepdims=True)
    feeds_d = {"state": item.copy(), "item": item, "weight": np.ones((batch, 1), np.float32), "decay": np.ones((batch, 1), np.float32)}
    feeds_o = {"item": item, "hidden": 0.3 * rng.standard_normal((batch, m.interests, m.hidden)).astype(np.float32),
               "global": 0.3 * rng.standard_normal((batch, m.hidden)).astype(np.float32),
               "soft": rng.standard_normal((batch, m.interests, m.dim)).astype(np.float32), "decay": np.ones((batch, 1), np.float32)}
    d, o = bundle.sessions["dreamumm_step"], bundle.sessions["opal_step"]
    reps = max(5, repeats // max(1, batch // 8))
    for _ in range(2):  # warm-up: first runs allocate
        run_chunked(d, None, feeds_d), run_chunked(o, None, feeds_o)
    rounds = []
    for _ in range(reps):  # the median round: a shared 2-core box has other processes' bursts in some rounds
        t0 = time.perf_counter()
        run_chunked(d, None, feeds_d)
        run_chunked(o, None, feeds_o)
        rounds.append(time.perf_counter() - t0)
    return float(np.median(rounds)) / batch * 1e6, float(np.min(rounds)) / batch * 1e6


@dataclass
class Latencies:
    """A paced run's events that got a record: when each was due, and how long until it was sent, and its record
    written and read (s).

    The three stages: *due -> sent* is the load generator's own lateness (it
    shares the box); *sent -> written* the broker's intake, the wait for
    the worker's fetch and the worker's batch; *written -> read* the
    record's way out through the broker to the bench's reader.
    """

    due: np.ndarray
    total: np.ndarray  # due -> the first record covering it read by the bench's reader
    written: np.ndarray  # due -> that record taken by the worker's producer (its Kafka timestamp, ms resolution)
    sent: np.ndarray  # due -> the event handed to the load generator's producer
    stages: Snapshot | None = None  # the worker's per-batch stage histograms over the run (dreamstream.bench.worker_stages)

    def split(self) -> str:
        """p50/p99 of each stage."""
        stages = (("due -> sent", self.sent), ("sent -> record written", self.written - self.sent),
                  ("written -> read", self.total - self.written))
        return "; ".join(f"{name} p50 {np.percentile(1000 * x, 50):.0f} ms, p99 {np.percentile(1000 * x, 99):.0f} ms"
                         for name, x in stages)

    @staticmethod
    def pooled(runs: list["Latencies"]) -> "Latencies":
        return Latencies(*(np.concatenate([getattr(r, name) for r in runs]) for name in ("due", "total", "written", "sent")))

    def stage_line(self) -> str | None:
        """The worker's per-stage p99s per batch and its batch sizes, when its /metrics page was read."""
        return summary(self.stages) if self.stages is not None else None


def _latency_run(s: Settings, bundle, rate: float, n_users: int, seconds: float, log: Path, tick_s: float,
                 broker_pid: int | None = None, reader_wait_ms: int = 20, live_share: float = 0.0
                 ) -> tuple[Latencies, CpuShare | None]:
    """A fresh worker fed ``seconds`` of synthetic events at ``rate``: each event's latencies, and who used the CPU."""
    from dreamstream.bench import harness as h

    events = h.synthetic_events(max(1, int(rate * seconds)), n_users, bundle.item_ids, seed=11)
    h.publish_items(s, bundle.item_ids, bundle.items, model=bundle.version, live_share=live_share,
                    space=bundle.manifest.item_space)
    run = _run_consumer(s, None, events, log, rate=rate, tick_s=tick_s, broker_pid=broker_pid, reader_wait_ms=reader_wait_ms)
    lat = _latencies(run.sent_at, events, run.col, run.handed_at)
    lat.stages = run.stages
    return lat, run.cpu


def _latencies(sent_at: list[float], events: list[dict], col, handed_at: list[float]) -> Latencies:
    """Per event with a record: its due time, when it was handed to the producer, and when the first record of its
    user whose seq covers it was written and read."""
    nth: dict[str, int] = {}
    due, total, written, sent = [], [], [], []
    for t_due, t_handed, e in zip(sent_at, handed_at, events):
        n = nth[e["user"]] = nth.get(e["user"], 0) + 1
        arrivals = col.arrivals.get(e["user"], [])
        first = next((i for i, (seq, _) in enumerate(arrivals) if seq >= n), None)  # arrivals are in time order
        if first is not None:
            due.append(t_due)
            total.append(arrivals[first][1] - t_due)
            written.append(col.written[e["user"]][first] - t_due)
            sent.append(t_handed - t_due)
    return Latencies(np.array(due), np.array(total), np.array(written), np.array(sent))


@dataclass
class ConsumerRun:
    """One worker (or plain agent) run: what the reader saw and when."""

    col: Any  # harness.Collected
    launched: float  # wall clock of the process launch
    first: float | None  # first and last record arrival
    last: float | None
    done: bool  # every user's final seq arrived
    sent_at: list[float] = field(default_factory=list)  # paced runs: each event's due time
    handed_at: list[float] = field(default_factory=list)  # paced runs: when each event went to the generator's producer
    cpu: CpuShare | None = None  # paced runs: CPU of worker, broker, load generator and reader while it ran
    stages: Snapshot | None = None  # paced runs: the worker's stage histograms from warm-up to the end
    refiner: Any = None  # --live-share: the item refiner's catch-up after the last user record (bench.live_refiner)


def _run_consumer(s: Settings, module: list[str] | None, events, log: Path, rate: float | None = None, timeout: float = 300,
                  per_message: int = 1, tick_s: float = 0.005, broker_pid: int | None = None,
                  reader_wait_ms: int = 20, until_refined: bool = False) -> ConsumerRun:
    """Start a worker process, feed events (preloaded, or paced when rate is given), wait for every final seq.

    ``until_refined``: then also wait for the item refiner to read every watch the worker reported.
    """
    from dreamstream.bench.live_refiner import wait_for_refiner
    from dreamstream.bench import harness as h
    from dreamstream.topics import create_topics

    create_topics(s)
    expected: dict[str, int] = {}
    for e in events:
        expected[e["user"]] = expected.get(e["user"], 0) + 1
    msgs = h.event_messages(events, per_message)
    sent_at: list[float] = []
    handed_at: list[float] = []
    cpu = None
    stages = None
    worker = h.WorkerProcess(s, log, command=module)
    if rate is None:
        h.produce_sync(s, s.topic("watch-events"), msgs)
        launched = time.time()
        worker.start()
        col = h.read_records(s, expected, timeout_s=timeout)
    else:
        launched = time.time()
        worker.start()
        warm = [dict(events[0], user="__warmup__")]
        h.produce_sync(s, s.topic("watch-events"), h.event_messages(warm))
        h.read_records(s, {"__warmup__": 1}, timeout_s=120)
        warm_stages = scrape(s.web_port)
        cpu = CpuShare({"worker": worker.proc.pid, "broker": broker_pid, "reader": os.getpid()}).start()
        feeder = h.PacedFeed(s, s.topic("watch-events"), msgs, rate, tick_s).start()
        col = h.read_records(s, expected, timeout_s=timeout + len(events) / rate, fetch_max_wait_ms=reader_wait_ms)
        cpu.stop()
        sent_at.extend(feeder.join())
        handed_at = feeder.handed_at
        cpu.add("load generator", feeder.cpu_seconds)
        end_stages = scrape(s.web_port)
        stages = end_stages.minus(warm_stages) if end_stages and warm_stages else None
    refiner = wait_for_refiner(s.web_port) if until_refined else None
    worker.stop()
    firsts = [t for arr in col.arrivals.values() for _, t in arr]
    done = all(col.latest.get(u, {}).get("seq", 0) >= n for u, n in expected.items())
    return ConsumerRun(col, launched, min(firsts) if firsts else None, max(firsts) if firsts else None, done, sent_at,
                       handed_at, cpu, stages, refiner)


class _PacedRuns:
    """Latency runs of fresh workers, each on its own topics and embedded broker: measure a rate, or measure and report it."""

    def __init__(self, brokers: RunBrokers, bundle: Any, n_users: int, seconds: float, tick_s: float,
                 reader_wait_ms: int = 20, live_share: float = 0.0) -> None:
        self.brokers, self.bundle, self.n_users, self.seconds, self.tick_s = brokers, bundle, n_users, seconds, tick_s
        self.reader_wait_ms, self.live_share = reader_wait_ms, live_share
        self.cpu: CpuShare | None = None

    def run(self, rate: float) -> Latencies:
        """One paced run at ``rate`` on a fresh worker and broker."""
        tag = f"latency{self.brokers.runs}"  # the bench's measurements are numbered by its RunBrokers
        log = self.brokers.work / f"{tag}.log"
        settings = self.brokers.fresh(tag)
        lat, self.cpu = _latency_run(settings, self.bundle, rate, self.n_users, self.seconds, log, self.tick_s,
                                     self.brokers.pid, self.reader_wait_ms, self.live_share)
        if not len(lat.total):
            raise click.ClickException(f"no user-embeddings record arrived in the latency run at {rate:,.0f} events/s; see {log}")
        return lat

    def measure(self, rate: float) -> tuple[np.ndarray, np.ndarray]:
        """Each event's due time and latency (s) at ``rate`` (what the live-max search judges)."""
        lat = self.run(rate)
        return lat.due, lat.total

    def report(self, rate: float, label: str, repeats: int = 1) -> LatencyAt:
        """Measure ``rate`` ``repeats`` times: each run's line, then (several runs) the percentiles over all their events.

        Why repeat: on this 2-core box two identical 15 s runs minutes apart
        gave a p99 of 162 and 486 ms. One run's p99 says which minute it
        ran in as much as what the worker does; the events of several runs
        together (each on a fresh worker and broker) estimate the p99 of the
        rate itself.
        """
        click.echo(f"latency at {rate:,.0f} events/s ({label}; {repeats} run{'s' if repeats > 1 else ''} of "
                   f"{self.seconds:.0f} s, latency from each event's due time):")
        runs = []
        for i in range(repeats):
            lat = self.run(rate)
            runs.append(lat)
            ms = lat.total * 1000
            thirds = " / ".join(f"{1000 * p:.0f}" for p in p99_by_part(lat.due, lat.total))
            click.echo(f"  run {i + 1}: {len(ms)} events, p50 {np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, "
                       f"max {ms.max():.1f} ms; p99 by third of the run {thirds} ms; latency grows "
                       f"{1000 * latency_slope(lat.due, lat.total):+.1f} ms per second of load (Theil-Sen, last two thirds)")
            click.echo(f"    {lat.split()}")
            if lat.stage_line():
                click.echo(f"    {lat.stage_line()}")
            if self.cpu is not None and self.cpu.summary():
                click.echo(f"    CPU while it ran: {self.cpu.summary()}")
        pooled = Latencies.pooled(runs)
        ms = pooled.total * 1000
        if repeats > 1:
            click.echo(f"  all {repeats} runs' events together: p50 {np.percentile(ms, 50):.1f} ms, "
                       f"p99 {np.percentile(ms, 99):.1f} ms (median of the runs' p99s "
                       f"{np.median([np.percentile(r.total, 99) for r in runs]) * 1000:.1f} ms)")
            click.echo(f"    {pooled.split()}")
        return LatencyAt(rate, float(np.percentile(ms, 99)), label, float(np.percentile(ms, 50)),
                         [float(np.percentile(r.total, 99) * 1000) for r in runs])


def _latency_reports(paced: _PacedRuns, rate: float, rates: tuple[float, ...], repeats: int, live_max: bool,
                     curve_png: Path | None = None, found: list[float] | None = None) -> list[LatencyAt]:
    """Latency at the chosen rates, else at half the preloaded maximum (and, with ``live_max``, the curve at
    10/25/50/75% of the live one, plotted to ``curve_png``); what was measured at the goals' points."""
    judged = []
    for r in rates or (rate / 2,):
        at = paced.report(r, "paced" if rates else HALF_PRELOADED, repeats)
        if not rates:
            judged.append(at)
    if live_max:
        click.echo(f"live maximum: bisecting (0, {rate:,.0f}] for the highest paced rate whose latency does not "
                   f"grow (dreamstream.bench.live_max.judge)")
        live = search_live_max(paced.measure, rate, echo=click.echo)
        if found is not None:
            found.append(live)
        if live:
            click.echo(f"live maximum: ~{live:,.0f} events/s ({live / rate:.0%} of the preloaded maximum)")
            labels = {0.10: TENTH_LIVE, 0.50: HALF_LIVE}
            curve = [paced.report(f * live, labels.get(f, f"{f:.0%} of the live max"), repeats) for f in FRACTIONS]
            judged.extend(curve)
            click.echo(table(curve, live))
            if curve_png is not None:
                load = " ".join(open("/proc/loadavg").read().split()[:3])
                title = f"dreamstream worker: latency against load\n{time.strftime('%Y-%m-%d %H:%M')}, load average {load}"
                click.echo(f"latency curve plotted to {plot(curve, live, curve_png, title)}")
        else:
            click.echo(f"live maximum: the worker fell behind even at {rate / 16:,.0f} events/s")
    return judged


@click.command("bench")
@settings_options("broker", "model_dir", "partitions", "batch_size", "batch_timeout_s", "log_level")
@click.option("--events", "n_events", default=60_000, show_default=True, envvar="DREAMSTREAM_BENCH_EVENTS", help="Synthetic events to process.")
@click.option("--users", "n_users", default=5_000, show_default=True, envvar="DREAMSTREAM_BENCH_USERS", help="Distinct users among them.")
@click.option("--embedded/--no-embedded", default=None, help="Start a private embedded broker (default: when --broker is not given).")
@click.option("--events-per-message", "per_message", default=1, show_default=True, envvar="DREAMSTREAM_BENCH_EVENTS_PER_MESSAGE",
              help="Events per watch-events message in the throughput runs: 1, or client batches (an array value "
                   "of one user's consecutive events, as apps that upload every few events send them). Both agents get the same messages.")
@click.option("--skip-plain", is_flag=True, envvar="DREAMSTREAM_BENCH_SKIP_PLAIN", help="Do not run the plain per-event agent.")
@click.option("--latency/--no-latency", default=True, show_default=True, help="Also run the latency test at half the preloaded max rate.")
@click.option("--latency-rate", "latency_rates", type=float, multiple=True, envvar="DREAMSTREAM_BENCH_LATENCY_RATES",
              help="Run the latency test at this events/s instead of half the preloaded max (repeat for several rates).")
@click.option("--soak", "soak_minutes", type=float, default=None, envvar="DREAMSTREAM_BENCH_SOAK",
              help="Instead: a soak of this many minutes at --soak-rate (throughput, p99, worker RSS over time, plot).")
@click.option("--soak-rate", type=float, default=500.0, show_default=True, envvar="DREAMSTREAM_BENCH_SOAK_RATE",
              help="Events/s of the soak's steady load (over --users users).")
@click.option("--send-interval-ms", type=float, default=None, envvar="DREAMSTREAM_BENCH_SEND_INTERVAL_MS",
              help="Paced load sends what is due this often, one record batch per partition (a producer's linger); "
                   "latency is timed from each event's due time. Default: 20 for the latency run (tansu lists every stored "
                   "batch on each fetch, so 5 ms batches slow the broker itself; see docs/measurements.md), 100 for the soak.")
@click.option("--latency-seconds", type=float, default=15.0, show_default=True, envvar="DREAMSTREAM_BENCH_LATENCY_SECONDS",
              help="Seconds of paced load in each latency run (its own synthetic events over --users users).")
@click.option("--latency-repeats", type=click.IntRange(min=1), default=3, show_default=True,
              envvar="DREAMSTREAM_BENCH_LATENCY_REPEATS",
              help="Latency runs at each reported rate (half the preloaded max, each point of the --live-max curve, each --latency-rate), each on a "
                   "fresh worker and broker; the report gives each run and the percentiles over all their events.")
@click.option("--live-max", is_flag=True, envvar="DREAMSTREAM_BENCH_LIVE_MAX",
              help="Also bisect for the highest paced rate the worker sustains, latency flat over the run (4 more latency "
                   "runs), and measure latency at 10%, 25%, 50% and 75% of it (--latency-repeats runs each): live traffic "
                   "spreads a batch over many more users than a preloaded backlog.")
@click.option("--live-share", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              envvar="DREAMSTREAM_BENCH_LIVE_SHARE",
              help="Share of the catalogue published as new (live) videos: their watches go to the item refiner, "
                   "which runs in the worker (the live refinement's cost; the events pick videos uniformly).")
@click.option("--reader-fetch-wait-ms", type=click.IntRange(min=1, max=1500), default=5, show_default=True,
              envvar="DREAMSTREAM_BENCH_READER_FETCH_WAIT_MS",
              help="Longest the broker may hold the bench's reader's fetch of user-embeddings when it has no data (ms). "
                   "5: written -> read p50 12-16 ms at 500 events/s, against 13-48 ms at 20 and 30-36 ms at 100 "
                   "(docs/measurements.md, issue 29).")
@click.option("--curve-plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              envvar="DREAMSTREAM_BENCH_CURVE_PLOT",
              help="With --live-max: write the latency-against-load curve as a PNG here (default: in the run's work folder).")
def bench(settings: Settings, n_events: int, n_users: int, embedded: bool | None, per_message: int, skip_plain: bool, latency: bool,
          soak_minutes: float | None = None, soak_rate: float = 500.0, send_interval_ms: float | None = None,
          latency_rates: tuple[float, ...] = (), latency_seconds: float = 15.0, latency_repeats: int = 3,
          live_max: bool = False, curve_plot: Path | None = None, reader_fetch_wait_ms: int = 5,
          live_share: float = 0.0) -> None:
    """Worker vs plain per-event Faust agent: events/s, event-to-embedding latency, ONNX cost per event."""
    from dreamstream.bench import harness as h
    from dreamstream.bundle import latest_version, load_bundle

    work = Path(tempfile.mkdtemp(prefix="dreamstream-bench-"))
    settings = h.ensure_bundle(settings, work, click.echo)
    bundle = load_bundle(latest_version(settings.model_dir))
    own_broker = embedded or (embedded is None and "DREAMSTREAM_BROKER" not in os.environ and "--broker" not in sys.argv)
    brokers = RunBrokers(settings, work, bool(own_broker))
    settings = settings.model_copy(update={"broker": brokers.url})
    click.echo(f"broker {settings.broker}{' (embedded: a fresh one for each run)' if own_broker else ''}; bundle {bundle.version}; "
               f"{n_events} events over {n_users} users; {settings.partitions} partitions; batch {settings.batch_size}; {per_message} event(s) per message; "
               f"load {open('/proc/loadavg').read().split()[:3]}" + (f"; live share {live_share:.0%} of the catalogue" if live_share else ""))
    if soak_minutes:  # dreamstream.bench.soak: steady load, memory must stay flat
        from dreamstream.bench.soak import soak_command
        if own_broker and soak_minutes * 60 * soak_rate > SOAK_EVENTS_ON_TANSU:
            click.echo(f"warning: {soak_minutes * 60 * soak_rate:,.0f} events on the embedded broker: its memory engine keeps "
                       f"every record (~110 MB a minute at 200 events/s) and its fetches slow as the log grows, so the "
                       f"latency will measure tansu, not the worker; beyond {SOAK_EVENTS_ON_TANSU:,} events use Kafka "
                       f"(--broker, infra/compose; docs/scaling.md#development-broker)", err=True)
        try:
            soak_command(settings, soak_minutes, soak_rate, n_users, work, echo=click.echo,
                         broker_pid=brokers.pid, send_interval_s=(send_interval_ms or 100) / 1000)
        finally:
            brokers.stop()
        return
    events = h.synthetic_events(n_events, n_users, bundle.item_ids, seed=7)

    try:
        s = brokers.fresh("worker")
        h.publish_items(s, bundle.item_ids, bundle.items, model=bundle.version, live_share=live_share,
                        space=bundle.manifest.item_space)
        run = _run_consumer(s, None, events, work / "worker.log", per_message=per_message, until_refined=live_share > 0)
        launched, first, last = run.launched, run.first, run.last
        if not run.done:
            raise click.ClickException(f"worker did not publish every final seq; see {work / 'worker.log'}")
        if last - first >= 0.01:
            rate = n_events / (last - first)
            click.echo(f"worker: {rate:,.0f} events/s ({n_events} events in {last - first:.2f} s after first output; "
                       f"launch to first output {first - launched:.1f} s)")
        else:  # every record came in one read: no span to time, so time from launch (start-up included)
            rate = n_events / (last - launched)
            click.echo(f"worker: {rate:,.0f} events/s (a lower bound: all {n_events} events came out in one read, so timed "
                       f"from launch, start-up included; use --events 60000 or more to measure)")
        if run.refiner is not None:
            click.echo(run.refiner.line())
        plain_rate = None
        results = BenchResults(rate, batch_size=settings.batch_size)
        if not skip_plain:
            p = brokers.fresh("plain")
            plain = _run_consumer(p, [sys.executable, "-m", "dreamstream.bench.plain_agent"], events,
                                  work / "plain.log", timeout=600, per_message=per_message)
            plain_rate = n_events / (plain.last - plain.first) if plain.done else None
            click.echo(f"plain per-event agent: {plain_rate:,.0f} events/s" if plain_rate else "plain agent did not finish")
            if plain_rate:
                click.echo(f"ratio worker / plain: {rate / plain_rate:.1f}x")
            results.plain_events_per_s = plain_rate
        box0 = machine_busy_seconds()
        (c1, _), (cb, cb_best) = _onnx_cost(bundle, 1), _onnx_cost(bundle, settings.batch_size)
        busy = busy_share(box0, machine_busy_seconds())  # one single-threaded session alone is 1/cores of the box
        meanwhile = f"; the box was {100 * busy:.0f}% busy meanwhile on {os.cpu_count()} cores" if busy is not None else ""
        click.echo(f"ONNX steps (dreamumm + opal) per event: {c1:.1f} us at batch 1, {cb:.2f} us at batch {settings.batch_size} "
                   f"(median round; best round {cb_best:.2f} us{meanwhile})")
        results.onnx_us = cb
        if latency:
            paced = _PacedRuns(brokers, bundle, n_users, latency_seconds, (send_interval_ms or 20) / 1000,
                               reader_fetch_wait_ms, live_share)
            found: list[float] = []
            results.latencies = _latency_reports(paced, rate, latency_rates, latency_repeats, live_max,
                                                 curve_plot or work / "latency_curve.png", found)
            results.live_max = found[0] if found else None
        click.echo(render(verdicts(results)))
    finally:
        brokers.stop()
