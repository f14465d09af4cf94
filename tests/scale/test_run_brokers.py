"""Bench runs are isolated: fresh topics each, and a fresh broker each when the bench owns the broker."""
from __future__ import annotations

from pathlib import Path

from kafka import KafkaProducer

from dreamstream.bench.run_brokers import RunBrokers
from dreamstream.settings import Settings


def test_an_embedded_broker_is_replaced_for_every_run_after_the_first(tmp_path: Path) -> None:
    brokers = RunBrokers(Settings(), tmp_path, embedded=True)
    try:
        first = brokers.fresh("a")
        first_pid = brokers.pid
        assert first.broker == brokers.url and first_pid is not None
        producer = KafkaProducer(bootstrap_servers=first.bootstrap_servers)  # the broker a run gets is serving
        producer.send(first.topic("watch-events"), b"x").get(timeout=30)
        producer.close()
        second = brokers.fresh("b")
        assert second.broker != first.broker and brokers.pid not in (None, first_pid)
        assert second.topic_prefix != first.topic_prefix and second.state_dir != first.state_dir
        assert second.web_port != first.web_port
    finally:
        brokers.stop()
    assert brokers.pid is None


def test_an_external_broker_is_shared_and_each_run_gets_its_own_topics(tmp_path: Path) -> None:
    brokers = RunBrokers(Settings(broker="kafka://10.0.0.1:9092"), tmp_path, embedded=False)
    first, second = brokers.fresh("a"), brokers.fresh("b")
    assert first.broker == second.broker == "kafka://10.0.0.1:9092" and brokers.pid is None
    assert first.topic_prefix != second.topic_prefix
    brokers.stop()  # nothing of its own to stop
