"""The embedded broker: the session fixture, and the durable mode surviving a restart."""
from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from dreamstream.broker import EmbeddedBroker, free_port
from dreamstream.settings import Settings
from dreamstream.topics import WATCH_EVENTS, USER_EMBEDDINGS, PartitionCountMismatch, admin_client, create_topics


def _produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    producer.send(topic, key=key, value=value).get(timeout=10)
    producer.close()


def _consume_all(bootstrap: str, topic: str) -> list[tuple[bytes, bytes]]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=4000, group_id=None)
    try:
        return [(m.key, m.value) for m in consumer]
    finally:
        consumer.close()


def test_fixture_broker_round_trips_a_message(broker: EmbeddedBroker) -> None:
    topic = f"roundtrip-{uuid.uuid4().hex[:8]}"
    _produce(broker.bootstrap, topic, b"u1", b"hello")
    assert _consume_all(broker.bootstrap, topic) == [(b"u1", b"hello")]


def test_topics_are_created_with_their_partition_counts(make_settings) -> None:
    settings: Settings = make_settings(partitions=3)
    first = create_topics(settings)
    assert set(first.values()) == {"created"}
    assert set(create_topics(settings).values()) == {"exists"}
    admin = admin_client(settings)
    try:
        described = {t.get("name", t.get("topic")): len(t["partitions"]) for t in admin.describe_topics([settings.topic(WATCH_EVENTS)])}
    finally:
        admin.close()
    assert described[settings.topic(WATCH_EVENTS)] == 3
    assert settings.topic(USER_EMBEDDINGS) in first


@pytest.mark.skipif(shutil.which("node") is None, reason="the durable broker needs Node.js")
def test_durable_broker_keeps_records_across_a_restart(tmp_path: Path) -> None:
    port = free_port()
    first = EmbeddedBroker(port=port, durable_dir=tmp_path, log_dir=tmp_path / "logs").start()
    try:
        _produce(first.bootstrap, "durable", b"k", b"before restart")
    finally:
        first.stop()
    second = EmbeddedBroker(port=port, durable_dir=tmp_path, s3_port=first.s3_port, log_dir=tmp_path / "logs").start()
    try:
        assert _consume_all(second.bootstrap, "durable") == [(b"k", b"before restart")]
    finally:
        second.stop()


def test_topics_with_another_partition_count_are_refused_with_what_to_do(make_settings) -> None:
    first: Settings = make_settings(partitions=3)
    create_topics(first)
    other = first.model_copy(update={"partitions": 5})
    with pytest.raises(PartitionCountMismatch) as refused:
        create_topics(other)
    message = str(refused.value)
    assert f"{first.topic(WATCH_EVENTS)} has 3 partitions" in message
    assert f"{first.topic(USER_EMBEDDINGS)} has 3 partitions" in message
    assert "DREAMSTREAM_PARTITIONS) is 5" in message and "item-watchers" not in message
    assert set(create_topics(first).values()) == {"exists"}  # the matching count still goes through
    more_items = first.model_copy(update={"item_partitions": 2})
    with pytest.raises(PartitionCountMismatch, match=r"item-watchers has 1 partitions, but --item-partitions "
                                                     r"\(DREAMSTREAM_ITEM_PARTITIONS\) is 2"):
        create_topics(more_items)


def test_the_cli_reports_a_partition_mismatch_without_a_traceback(make_settings) -> None:
    from click.testing import CliRunner

    from dreamstream.cli import main

    settings: Settings = make_settings(partitions=3)
    create_topics(settings)
    result = CliRunner().invoke(main, ["topics", "--broker", settings.broker, "--topic-prefix", settings.topic_prefix,
                                       "--partitions", "4"])
    assert result.exit_code == 1, result.output
    assert "Error: " in result.output and "has 3 partitions" in result.output and "is 4" in result.output
    assert "Traceback" not in result.output
