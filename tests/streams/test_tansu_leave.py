"""On tansu a consumer of a group's first generation (0 there, 1 on Kafka) leaves its group when it stops.

Without the repair the stopped member stayed until its session timed out,
and a worker restarted meanwhile joined a group led by a dead member (a
rebalance and a second join: 13 s to serving at 10M videos instead of ~5).
"""
from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.consumer.group_coordinator import GroupCoordinator

from dreamstream.settings import Settings
from streams.compat.tansu_leave import install


async def members_after_a_first_generation_stops(bootstrap: str, topic: str, group: str) -> tuple[int, int]:
    """(the generation the consumer joined in, members the group still has after it stopped)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"x")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, session_timeout_ms=30_000)
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            while not consumer.assignment():
                await asyncio.sleep(0.05)
        generation = consumer._coordinator.generation
    finally:
        await consumer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_consumer_groups([group])
        return generation, len(described.groups[0][5])  # (error, group, state, protocol type, protocol, members, ...)
    finally:
        await admin.close()


def test_a_first_generation_member_leaves_its_group_on_stop(broker, monkeypatch) -> None:
    monkeypatch.setattr(GroupCoordinator, "_maybe_leave_group", GroupCoordinator._maybe_leave_group)  # undone after
    install(Settings(broker=broker.url, broker_kind="tansu"))
    generation, members = asyncio.run(members_after_a_first_generation_stops(
        broker.bootstrap, f"leave-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"))
    assert generation == 0, "tansu's first generation is no longer 0: streams/compat/tansu_leave.py can go"
    assert members == 0


def test_on_kafka_nothing_is_patched(monkeypatch) -> None:
    original = GroupCoordinator._maybe_leave_group
    monkeypatch.setattr(GroupCoordinator, "_maybe_leave_group", original)
    install(Settings(broker="kafka://10.0.0.1:9092", broker_kind="kafka"))
    assert GroupCoordinator._maybe_leave_group is original
