"""aiokafka's consumer.stop() with the broker away: raises CancelledError unpatched, stops cleanly patched."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.consumer.fetcher import Fetcher

from dreamstream.broker import EmbeddedBroker, free_port
from streams.compat import fetch_cancel


async def stop_with_broker_away(tmp_path: Path) -> str:
    """Read a record, stop the broker, let one fetch fail into its backoff, stop the consumer: how did it end?"""
    broker = EmbeddedBroker(port=free_port(), log_dir=tmp_path / f"broker-{free_port()}").start()
    servers = broker.bootstrap
    try:
        producer = AIOKafkaProducer(bootstrap_servers=servers)
        await producer.start()
        await producer.send_and_wait("t", b"x", partition=0)
        await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=None, auto_offset_reset="earliest",
                                    retry_backoff_ms=3000)  # a long backoff: the stop below lands inside it
        await consumer.start()
        consumer.assign([TopicPartition("t", 0)])
        got = await consumer.getmany(timeout_ms=5000)
        assert sum(len(v) for v in got.values()) == 1
    finally:
        broker.stop()
    await asyncio.sleep(1.5)  # the fetch in flight failed and now sleeps out its backoff
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        return "raised CancelledError"
    return "stopped"


def test_stopping_a_consumer_while_the_broker_is_away(tmp_path, monkeypatch):
    monkeypatch.setattr(Fetcher, "_proc_fetch_request", fetch_cancel._ORIGINAL)
    unpatched = asyncio.run(stop_with_broker_away(tmp_path))
    fetch_cancel.install()
    assert asyncio.run(stop_with_broker_away(tmp_path)) == "stopped"
    if unpatched == "stopped":
        pytest.skip("this aiokafka no longer raises on stop; streams/compat/fetch_cancel.py can go")


def test_the_worker_loop_tells_a_stray_cancelled_error_from_a_stop():
    """The batch loop redoes from the last commit on a library's stray CancelledError, and stops on a real one."""
    from streams.compat.fetch_cancel import cancel_requested

    async def stray() -> bool:
        try:
            raise asyncio.CancelledError  # what consumer.stop() raised unpatched, in a task nobody cancelled
        except asyncio.CancelledError:
            return cancel_requested()

    async def real() -> bool:
        asyncio.current_task().cancel()
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            return cancel_requested()
        return False

    assert asyncio.run(stray()) is False
    assert asyncio.run(real()) is True
