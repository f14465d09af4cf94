"""A live batch's records leave as one record batch per partition, each one a stock Kafka broker accepts."""
from __future__ import annotations

import asyncio

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from dreamstream.topics import USER_EMBEDDINGS, create_topics
from streams.app import app_config
from streams.kafka.batch_send import send_records
from streams.domain.records import user_records

KAFKA_MESSAGE_MAX_BYTES = 1_048_588  # Kafka's default message.max.bytes: the largest record batch a broker takes


def live_batch_records(n: int, dim: int = 64, interests: int = 4) -> list[bytes]:
    """``n`` user-embeddings records of the contract's default shape (~1.4 KB each)."""
    rng = np.random.default_rng(0)
    return user_records([f"user-{i}" for i in range(n)], list(range(1, n + 1)), [1_700_000_000_000] * n, "v1",
                        rng.standard_normal((n, dim)).astype(np.float32),
                        rng.standard_normal((n, interests, dim)).astype(np.float32),
                        np.full((n, interests), 1 / interests, np.float32), [False] * n)


def test_a_partitions_share_of_a_live_batch_is_one_record_batch_a_stock_broker_takes(make_settings) -> None:
    """At 31,000 events/s a batch sent ~600 KB of records a partition; with 256 KB batches that took three
    round trips in a row (streams.kafka.batch_send). Here 700 records (~1 MB) for one partition must go as one batch."""
    s = make_settings(partitions=2)
    create_topics(s)
    topic = s.topic(USER_EMBEDDINGS)
    values = live_batch_records(700)
    assert sum(map(len, values)) > 900_000

    async def send_and_read() -> tuple[list, int]:
        producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers,
                                    max_batch_size=app_config(s)["producer_max_batch_size"])
        await producer.start()
        try:
            sent = await send_records(producer, topic, [(f"user-{i}".encode(), v, 0) for i, v in enumerate(values)])
            await asyncio.gather(*(x.future for x in sent))
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=s.bootstrap_servers, group_id=None,
                                    auto_offset_reset="earliest")
        await consumer.start()
        try:
            got = 0
            for _ in range(50):
                got += sum(len(r) for r in (await consumer.getmany(timeout_ms=200)).values())
                if got >= len(values):
                    break
        finally:
            await consumer.stop()
        return sent, got

    sent, got = asyncio.run(send_and_read())
    assert [(x.partition, x.count) for x in sent] == [(0, 700)], "the partition's records must leave in one batch"
    assert got == 700


def test_the_worker_producers_batch_limit_fits_a_stock_broker() -> None:
    """A full batch, header included, must stay under message.max.bytes, or a real Kafka refuses it."""

    async def build() -> int:
        from dreamstream.settings import Settings

        producer = AIOKafkaProducer(max_batch_size=app_config(Settings())["producer_max_batch_size"])
        batch = producer.create_batch()
        for i, value in enumerate(live_batch_records(2000)):
            if batch.append(key=f"user-{i}".encode(), value=value, timestamp=None) is None:
                break
        else:
            raise AssertionError("2,000 records (~2.8 MB) should not fit one batch")
        size = batch.size()
        await producer.stop()
        return size

    assert asyncio.run(build()) <= KAFKA_MESSAGE_MAX_BYTES


def test_a_handed_over_batch_does_not_wait_out_the_producers_linger(make_settings) -> None:
    """A worker's batches are complete when handed over: they leave at once, whatever the producer's linger
    (Faust's is 5 ms, added to every record's latency before). A 5 s linger makes the difference unmistakable."""
    s = make_settings(partitions=2)
    create_topics(s)
    topic = s.topic(USER_EMBEDDINGS)

    async def acknowledged_after() -> float:
        producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, linger_ms=5000)
        await producer.start()
        try:
            await send_records(producer, topic, [(b"warm", b"up", 0)])  # metadata and connection first
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            sent = await send_records(producer, topic, [(f"user-{i}".encode(), b"x" * 100, i % 2) for i in range(10)])
            await asyncio.gather(*(x.future for x in sent))
            return loop.time() - t0
        finally:
            await producer.stop()

    assert asyncio.run(acknowledged_after()) < 2.5, "the batches waited for the linger"
