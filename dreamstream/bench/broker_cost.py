"""What the development broker costs as its log grows: RAM (and disk) per record, and fetch latency at the tail.

Why measured: tansu's memory engine keeps every record in RAM and each
fetch lists the partition's stored batches, so a long run (a soak, the
scale bench) can make the broker, not the worker, the bottleneck. The
durable mode (tansu's S3 engine over the strict s3rver) keeps records on
disk but lists objects per fetch. This bench fills one topic of a fresh
broker in steps and, after each step, reads:

* the broker's RSS (tansu, plus s3rver in durable mode) and the data
  folder's bytes, each per record stored;
* tail latency: a consumer at the end of the log; one record produced,
  seconds until that consumer has it, ``probes`` times (what a worker
  following a topic meets on every fetch; produce acknowledgement included);
* at the last step, a read of the whole log from offset 0 (records/s; what
  a worker's start-up pays for a topic it reads from the beginning).
"""
from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dreamstream.bench import harness as h
from dreamstream.bench.soak import rss_mb
from dreamstream.broker import EmbeddedBroker, free_port
from dreamstream.kafka.security import aiokafka_options
from dreamstream.settings import Settings

ENGINES = ("memory", "s3")


@dataclass
class Step:
    engine: str
    records: int  # stored in the topic after this step
    batches: int  # record batches they were produced in
    rss_mb: float  # tansu (+ s3rver)
    disk_mb: float  # durable folder (0 for memory)
    tail_p50_ms: float
    tail_p99_ms: float
    full_read_per_s: float | None = None  # last step only


def folder_mb(path: Path | None) -> float:
    """Bytes under ``path`` in MB (0 when there is none)."""
    if path is None or not path.exists():
        return 0.0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def broker_rss(broker: EmbeddedBroker) -> float:
    """RSS of every process of the broker (tansu and, durable, s3rver), MB."""
    return sum(rss_mb(pid) or 0.0 for pid in broker.pids)


async def _fill(settings: Settings, topic: str, n: int, record_bytes: int, batch_records: int, seed: int) -> int:
    """``n`` records of ``record_bytes`` random bytes, as batches of ``batch_records`` (a worker's batch); returns batches."""
    from streams.kafka.batch_send import send_records

    rng = np.random.default_rng(seed)
    prod = await h.open_producer(settings)
    batches = 0
    try:
        for lo in range(0, n, batch_records):
            count = min(batch_records, n - lo)
            payload = rng.bytes(record_bytes * count)
            records = [(f"k{seed}-{lo + i}".encode(), payload[i * record_bytes:(i + 1) * record_bytes], 0)
                       for i in range(count)]
            await asyncio.gather(*(b.future for b in await send_records(prod, topic, records)))
            batches += 1
    finally:
        await prod.stop()
    return batches


async def _tail_latency(settings: Settings, topic: str, probes: int, give_up_s: float = 30.0) -> list[float]:
    """Seconds from producing one record until a consumer at the log's end fetched it, ``probes`` times.

    The probe is recognised by its offset: tansu answers ListOffsets one batch
    short, so the consumer's first fetch may bring older records. A first
    version waited for "any record" with a 1 ms fetch wait: its fetch loop
    kept tansu busy listing batches and, at 3,000 batches on a loaded box, no
    probe arrived within 30 s, while this one saw them in 40 ms.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tp = TopicPartition(topic, 0)
    cons = AIOKafkaConsumer(**aiokafka_options(settings), group_id=None, enable_auto_commit=False,
                            fetch_max_wait_ms=100)  # a long poll: the broker answers as soon as the record is there
    prod = await h.open_producer(settings)
    await cons.start()
    out = []
    try:
        cons.assign([tp])
        await cons.seek_to_end(tp)
        for i in range(probes):
            t0 = time.perf_counter()
            sent = await (await prod.send(topic, value=b"probe", key=f"probe{i}".encode(), partition=0))
            while time.perf_counter() - t0 < give_up_s:  # a broker that never shows the record is reported, not waited on
                got = (await cons.getmany(tp, timeout_ms=1_000)).get(tp, [])
                if any(m.offset >= sent.offset for m in got):
                    break
            out.append(time.perf_counter() - t0)
    finally:
        await cons.stop()
        await prod.stop()
    return out


async def _full_read(settings: Settings, topic: str) -> float:
    """Records per second reading the whole partition from offset 0 to the fetch high watermark."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tp = TopicPartition(topic, 0)
    cons = AIOKafkaConsumer(**aiokafka_options(settings), group_id=None, enable_auto_commit=False, fetch_max_wait_ms=100)
    await cons.start()
    try:
        cons.assign([tp])
        await cons.seek_to_beginning(tp)
        n, t0 = 0, time.perf_counter()
        while True:
            got = await cons.getmany(tp, timeout_ms=1000, max_records=50_000)
            n += len(got.get(tp, []))
            high = cons.highwater(tp)
            if high is not None and await cons.position(tp) >= high:
                return n / (time.perf_counter() - t0)
    finally:
        await cons.stop()


def measure(engine: str, records: int, steps: int, record_bytes: int, batch_records: int, work: Path,
            probes: int = 30, progress: Callable[[str], None] = print) -> list[Step]:
    """Fill one topic of a fresh broker of ``engine`` to ``records`` in ``steps`` steps; one :class:`Step` each."""
    from kafka.admin import NewTopic

    from dreamstream.topics import admin_client

    durable = work / f"{engine}-data" if engine == "s3" else None
    broker = EmbeddedBroker(port=free_port(), durable_dir=durable, log_dir=work / f"{engine}-logs").start()
    settings = Settings(broker=broker.url, topic_prefix=f"brokercost{uuid.uuid4().hex[:6]}.")
    topic = settings.topic("log")
    admin = admin_client(settings)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        admin.close()
    out: list[Step] = []
    try:
        stored, batches = 0, 0
        for k in range(1, steps + 1):
            target = records * k // steps
            t0 = time.monotonic()
            batches += asyncio.run(_fill(settings, topic, target - stored, record_bytes, batch_records, seed=k))
            stored = target
            fill_s = time.monotonic() - t0
            time.sleep(1.0)
            lat = np.array(asyncio.run(_tail_latency(settings, topic, probes))) * 1000
            step = Step(engine, stored, batches, broker_rss(broker), folder_mb(durable),
                        float(np.percentile(lat, 50)), float(np.percentile(lat, 99)))
            if k == steps:
                step.full_read_per_s = asyncio.run(_full_read(settings, topic))
            out.append(step)
            progress(f"  {engine}: {stored:,} records ({batches:,} batches, filled at {(target - records * (k - 1) // steps) / fill_s:,.0f}/s): "
                     f"RSS {step.rss_mb:,.0f} MB, disk {step.disk_mb:,.0f} MB, tail fetch p50 {step.tail_p50_ms:.0f} ms "
                     f"p99 {step.tail_p99_ms:.0f} ms" + (f", whole log read at {step.full_read_per_s:,.0f} records/s"
                                                         if step.full_read_per_s else ""))
    finally:
        broker.stop()
    return out


def per_record(steps: list[Step]) -> dict[str, Any]:
    """RSS and disk per record stored (slope between the first and last step), and tail latency's growth."""
    first, last = steps[0], steps[-1]
    span = max(1, last.records - first.records)
    return {"engine": last.engine, "rss_bytes_per_record": (last.rss_mb - first.rss_mb) * 2**20 / span,
            "disk_bytes_per_record": (last.disk_mb - first.disk_mb) * 2**20 / span,
            "tail_p50_ms_first_last": (first.tail_p50_ms, last.tail_p50_ms),
            "tail_p50_ms_per_100k_batches": (last.tail_p50_ms - first.tail_p50_ms) / max(1, last.batches - first.batches) * 1e5}


def table(steps: list[Step]) -> str:
    rows = ["| engine | records | batches | broker RSS (MB) | disk (MB) | tail fetch p50 / p99 (ms) | whole-log read (records/s) |",
            "|---|---|---|---|---|---|---|"]
    for s in steps:
        rows.append(f"| {s.engine} | {s.records:,} | {s.batches:,} | {s.rss_mb:,.0f} | {s.disk_mb:,.0f} | "
                    f"{s.tail_p50_ms:.0f} / {s.tail_p99_ms:.0f} | {'-' if s.full_read_per_s is None else f'{s.full_read_per_s:,.0f}'} |")
    return "\n".join(rows)


def to_json(steps: list[Step]) -> list[dict[str, Any]]:
    return [asdict(s) for s in steps]
