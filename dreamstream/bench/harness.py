"""Drive a stream worker from outside: publish items, produce events, read user-embeddings, run worker processes.

Used by `dreamstream bench` and by the end-to-end tests, so both measure the
same thing the same way: real broker, real worker processes, the bytes of
the design's topics. Producers use aiokafka's default partitioner (murmur2,
as Kafka's Java clients), so a user's events land where any client would put them.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from dreamstream import codec
from dreamstream.kafka.security import aiokafka_options
from dreamstream.settings import Settings
from dreamstream.topics import ITEM_VECTORS, ITEM_WATCHERS, USER_EMBEDDINGS, create_topics


def synthetic_events(n_events: int, n_users: int, item_ids: Sequence[str], seed: int = 0,
                     start_ms: int | None = None, impressions: float = 0.0) -> list[dict[str, Any]]:
    """Random watch events (completion ratios 0..1.6, so some skips and replays), time ordered."""
    rng = np.random.default_rng(seed)
    start_ms = int(time.time() * 1000) - n_events if start_ms is None else start_ms
    users = rng.integers(0, n_users, n_events)
    videos = rng.integers(0, len(item_ids), n_events)
    durations = rng.integers(2_000, 60_000, n_events)
    ratios = rng.uniform(0.0, 1.6, n_events)
    kinds = rng.random(n_events) < impressions
    return [
        {"user": f"u{users[i]}", "video": item_ids[videos[i]], "ts": start_ms + i,
         "watch_ms": int(ratios[i] * durations[i]) if not kinds[i] else 0, "duration_ms": int(durations[i]),
         **({"kind": "impression"} if kinds[i] else {})}
        for i in range(n_events)
    ]


async def open_producer(settings: Settings) -> Any:
    """A producer for load generation and test input: acks=1, batches up to 256 KiB."""
    from aiokafka import AIOKafkaProducer

    prod = AIOKafkaProducer(**aiokafka_options(settings), linger_ms=5, max_batch_size=256 * 1024,
                            acks=1, request_timeout_ms=30_000)
    await prod.start()
    return prod


async def produce(settings: Settings, topic: str, messages: Iterable[tuple[bytes | None, bytes | None]],
                  rate: float | None = None, sent_at: list[float] | None = None, tick_s: float = 0.005,
                  handed_at: list[float] | None = None) -> int:
    """Send (key, value) pairs to a topic (full name), optionally paced at ``rate`` msgs/s; returns the count.

    Paced, every ``tick_s`` the messages due by then leave as one record
    batch per partition (as a client with ``linger.ms`` would send them; one
    request per message cost the load generator more CPU than the worker
    under test). ``sent_at`` gets each message's *due* time: a latency
    measured from it includes any delay of the generator itself, and
    ``handed_at`` (paced only) when the generator actually handed the
    message to its producer, so a report can tell that delay apart.
    """
    prod = await open_producer(settings)
    try:
        if rate:
            on_due = None
            if sent_at is not None:
                def on_due(_key: bytes | None, due: float) -> None:
                    sent_at.append(due)
                    if handed_at is not None:
                        handed_at.append(time.time())  # called right after the message's batch went to the producer
            return await send_paced(prod, topic, messages, rate, on_due, tick_s)
        n = 0
        futures = []
        for key, value in messages:
            futures.append(await prod.send(topic, value=value, key=key))
            if sent_at is not None:
                sent_at.append(time.time())
            n += 1
            if len(futures) >= 5000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
        return n
    finally:
        await prod.stop()


async def send_paced(prod: Any, topic: str, messages: Iterable[tuple[bytes | None, bytes | None]], rate: float,
                     on_due: Callable[[bytes | None, float], None] | None = None, tick_s: float = 0.005,
                     stop: Any = None) -> int:
    """Send ``messages`` at ``rate`` msgs/s in ticks: each tick's due messages as one record batch per partition.

    ``on_due(key, due_time)`` is called for each message as it leaves, with
    the wall-clock time it was due. Stops when ``messages`` runs out or
    ``stop`` (a ``threading.Event``) is set; returns how many were sent.
    """
    from streams.kafka.batch_send import send_records

    it = iter(messages)
    start_wall, start = time.time(), time.perf_counter()
    futures: list[Any] = []
    sent = 0
    while stop is None or not stop.is_set():
        want = max(0, int((time.perf_counter() - start) * rate) + 1 - sent)
        batch = list(itertools.islice(it, want))
        if batch:
            futures.extend(b.future for b in await send_records(prod, topic, [(k, v, None) for k, v in batch]))
            if on_due is not None:
                for i, (key, _) in enumerate(batch, start=sent):
                    on_due(key, start_wall + i / rate)
            sent += len(batch)
        if len(batch) < want:
            break  # the messages ran out
        if len(futures) >= 1000:
            await asyncio.gather(*futures)
            futures.clear()
        await asyncio.sleep(tick_s)
    await asyncio.gather(*futures)
    return sent


def produce_sync(settings: Settings, topic: str, messages: Iterable[tuple[bytes | None, bytes | None]], **kw: Any) -> int:
    return asyncio.run(produce(settings, topic, messages, **kw))


def _paced_child(settings: Settings, topic: str, messages: list, rate: float, tick_s: float, out: Any) -> None:
    sent_at: list[float] = []
    handed_at: list[float] = []
    produce_sync(settings, topic, messages, rate=rate, sent_at=sent_at, tick_s=tick_s, handed_at=handed_at)
    out.send((sent_at, handed_at, time.process_time()))  # its CPU too: the child is gone before anyone can read /proc for it
    out.close()


class PacedFeed:
    """A paced producer in a child process, so the load generator and the reader do not share one GIL."""

    def __init__(self, settings: Settings, topic: str, messages: list[tuple[bytes | None, bytes | None]], rate: float,
                 tick_s: float = 0.005) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        self._recv, send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_paced_child, args=(settings, topic, messages, rate, tick_s, send), daemon=True)
        self.cpu_seconds = 0.0  # the generator's own CPU time, known after join()
        self.handed_at: list[float] = []  # when each message went to the generator's producer, known after join()

    def start(self) -> "PacedFeed":
        self.proc.start()
        return self

    def join(self) -> list[float]:
        """Each message's due time (wall clock), once every message is acknowledged."""
        sent_at, self.handed_at, self.cpu_seconds = self._recv.recv()
        self.proc.join()
        return sent_at


def publish_items(settings: Settings, ids: Sequence[str], vectors: np.ndarray, model: str = "test",
                  live_share: float = 0.0, space: str = "") -> int:
    """Item vectors onto item-vectors, as `publish-items` does.

    ``live_share``: that share of the items (a seeded draw) is published as
    the item tower would publish new videos (``live``, their vector also on
    ``item-watchers`` as the tower vector), so the worker reports their
    watches and its item refiner keeps them: the live path's cost in a bench
    (``space``: the bundle's ``Manifest.item_space``, which the refiner checks).
    """
    ts = int(time.time() * 1000)
    live = np.random.default_rng(5).random(len(ids)) < live_share
    msgs = [(codec.key_bytes(i), codec.pack(codec.item_vector_record(i, v, model, ts, live=bool(on))))
            for i, v, on in zip(ids, vectors, live)]
    if live.any():
        create_topics(settings)  # item-watchers with --item-partitions, as the worker's refiner table needs
        produce_sync(settings, settings.topic(ITEM_WATCHERS), [
            (codec.key_bytes(i), codec.pack(codec.tower_record(i, v, space, ts)))
            for i, v, on in zip(ids, vectors, live) if on])
    return produce_sync(settings, settings.topic(ITEM_VECTORS), msgs)


def event_messages(events: Sequence[dict[str, Any]], per_message: int = 1) -> list[tuple[bytes, bytes]]:
    """Keyed watch-events messages: one event each, or client batches of up to ``per_message`` events.

    A client batch (the design allows an array value) holds consecutive
    events of one user, so per-user order is kept; messages are ordered by
    their first event, as a fleet of apps uploading every few events would send them.
    """
    if per_message <= 1:
        return [(codec.key_bytes(e["user"]), codec.pack(e)) for e in events]
    open_batch: dict[str, list[dict[str, Any]]] = {}
    batches: list[list[dict[str, Any]]] = []
    for e in events:
        batch = open_batch.get(e["user"])
        if batch is None or len(batch) >= per_message:
            batch = open_batch[e["user"]] = []
            batches.append(batch)
        batch.append(e)
    return [(codec.key_bytes(b[0]["user"]), codec.pack(b)) for b in batches]


def slim_record(value: bytes) -> dict[str, Any]:
    """A user-embeddings record reduced to its user and seq: a reader of a million full records would fill the RAM."""
    record = codec.unpack(value)
    return {"user": record.get("user"), "seq": record.get("seq")} if isinstance(record, dict) else {}


@dataclass
class Collected:
    """What a reader saw on an output topic."""

    latest: dict[str, dict[str, Any]] = field(default_factory=dict)  # user -> last record (highest seq)
    arrivals: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # user -> [(seq, wall time)]
    written: dict[str, list[float]] = field(default_factory=dict)  # user -> per arrival, when the producer wrote it
    count: int = 0

    def add(self, user: Any, value: Any, now: float, written: float | None = None) -> None:
        """One record read at ``now``: a user's record (it has a seq) or anything else, kept under its count.

        ``written``: the record's Kafka timestamp (when the worker's producer
        took it), so a latency splits into the worker's side and the read side.
        """
        self.count += 1
        if not (isinstance(value, dict) and "seq" in value):
            self.latest[f"#{self.count}"] = value
            return
        self.arrivals.setdefault(user, []).append((value["seq"], now))
        self.written.setdefault(user, []).append(now if written is None else written)
        prev = self.latest.get(user)
        if prev is None or value["seq"] >= prev["seq"]:
            self.latest[user] = value


READER_FETCH_WAIT_MS = 20  # the longest the broker may hold the reader's fetch when it has no data (bench --reader-fetch-wait-ms)


async def read_until(settings: Settings, topic: str, done: Any, timeout_s: float, decode: Any = codec.unpack,
                     collected: Collected | None = None, key_of: Any = None,
                     start: dict[int, int] | None = None, fetch_max_wait_ms: int = READER_FETCH_WAIT_MS) -> Collected:
    """Read ``topic`` from the beginning (or from ``start``: partition -> offset) until ``done(collected)`` or timeout.

    ``start`` (see :func:`end_offsets`) lets a reader skip what a topic held
    before a measurement: at 1M users, reading their old records first
    delayed the new ones by tens of seconds (that delay is the reader's, not the worker's).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.ops.gc_tuning import fewer_young_passes

    col = collected or Collected()
    cons = AIOKafkaConsumer(*(() if start else (topic,)), **aiokafka_options(settings), auto_offset_reset="earliest",
                            enable_auto_commit=False, group_id=None, fetch_max_wait_ms=fetch_max_wait_ms)
    await cons.start()
    if start:
        tps = {p: TopicPartition(topic, p) for p in start}
        cons.assign(list(tps.values()))
        for p, offset in start.items():
            cons.seek(tps[p], offset)
    try:
        with fewer_young_passes():  # a tuple kept per record: full passes over them paused the reader (streams.ops.gc_tuning)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and not done(col):
                batches = await cons.getmany(timeout_ms=100, max_records=20000)
                now = time.time()
                for records in batches.values():
                    for m in records:
                        value = decode(m.value) if m.value is not None else None
                        col.add(key_of(m, value) if key_of else (value or {}).get("user"), value, now, m.timestamp / 1000)
        return col
    finally:
        await cons.stop()


def read_records(settings: Settings, expected_seq: dict[str, int], timeout_s: float,
                 start: dict[int, int] | None = None, fetch_max_wait_ms: int = READER_FETCH_WAIT_MS) -> Collected:
    """user-embeddings (from ``start``, else the beginning) until every user's record reached its expected seq."""
    def done(col: Collected) -> bool:
        return all(col.latest.get(u, {}).get("seq", 0) >= n for u, n in expected_seq.items())
    return asyncio.run(read_until(settings, settings.topic(USER_EMBEDDINGS), done, timeout_s, start=start,
                                  fetch_max_wait_ms=fetch_max_wait_ms))


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """partition -> end offset of a topic now, for a reader that must skip what it held before.

    tansu answers ListOffsets one produce batch short (see
    :func:`streams.kafka.log_reader.caught_up`), so such a reader may see a
    few older records again; it never misses a newer one.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.compat.aiokafka_metadata import refresh_metadata

    async def ends() -> dict[int, int]:
        cons = AIOKafkaConsumer(**aiokafka_options(settings), group_id=None, enable_auto_commit=False)
        await cons.start()
        try:
            parts, deadline = None, time.monotonic() + 60
            while not parts:
                parts = await refresh_metadata(cons) and cons.partitions_for_topic(topic)
                if not parts:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"topic {topic} has no partitions after 60 s; was it created?")
                    await asyncio.sleep(0.2)
            got = await cons.end_offsets([TopicPartition(topic, p) for p in sorted(parts)])
            return {tp.partition: offset for tp, offset in got.items()}
        finally:
            await cons.stop()
    return asyncio.run(ends())


def ensure_bundle(settings: Settings, work: Path, echo: Any = print) -> Settings:
    """Settings whose model dir holds a bundle: the given one, else a random one exported into ``work``.

    Benchmarks measure the machinery, not the model, so a freshly initialised
    bundle (``export.random_bundle``, in a child process: this one stays torch-free) is enough.
    """
    from dreamstream.bundle import latest_version

    if latest_version(settings.model_dir) is not None:
        return settings
    echo(f"no bundle in {settings.model_dir}: exporting a random one (export.random_bundle) ...")
    code = f"from export.bundle_writer import random_bundle; random_bundle({str(work / 'models')!r}, n_items=2000)"
    subprocess.run([sys.executable, "-c", code], check=True)
    return settings.model_copy(update={"model_dir": work / "models"})


def settings_env(settings: Settings) -> dict[str, str]:
    """The DREAMSTREAM_* environment that reproduces ``settings`` in a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DREAMSTREAM_") or k == "DREAMSTREAM_CACHE"}
    for name, value in settings.model_dump().items():
        if value is not None:  # unset optional settings (a CA file, say) stay unset, not the string "None"
            env[f"DREAMSTREAM_{name.upper()}"] = str(value)
    return env


class WorkerProcess:
    """`dreamstream worker` as a child process, with its log in a file."""

    def __init__(self, settings: Settings, log_path: Path, command: list[str] | None = None) -> None:
        self.settings = settings
        self.log_path = Path(log_path)
        self.command = command or [str(Path(sys.executable).parent / "dreamstream"), "worker"]
        self.proc: subprocess.Popen | None = None
        self.started = 0.0

    def start(self) -> "WorkerProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.command, env=settings_env(self.settings), stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM and wait (a clean shutdown); SIGKILL if it hangs."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
