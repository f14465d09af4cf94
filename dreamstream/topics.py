"""The topics of the design, their partitioning and configs, and how to create them.

Partition counts are settings because they are the unit of scale-out: one
worker per ``watch-events`` partition at most. ``user-embeddings`` is
co-partitioned with ``watch-events`` (same key, same count) so a user's record
is produced by the worker that owns that user.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from dreamstream.errors import broker_bootstrap, broker_unreachable
from dreamstream.kafka.security import kafka_python_options
from dreamstream.settings import Settings

log = logging.getLogger(__name__)

WATCH_EVENTS = "watch-events"
ITEM_FEATURES = "item-features"
ITEM_VECTORS = "item-vectors"
ITEM_WATCHERS = "item-watchers"
USER_EMBEDDINGS = "user-embeddings"
DLQ = "watch-events-dlq"
INDEX_VERSIONS = "index-versions"

COMPACT = {"cleanup.policy": "compact"}


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its design name, partition count and configs."""

    name: str
    partitions: int
    configs: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic of the design, sized from the settings."""
    p, ip = settings.partitions, settings.item_partitions
    return [
        TopicSpec(WATCH_EVENTS, p, {}),
        TopicSpec(USER_EMBEDDINGS, p, COMPACT),
        TopicSpec(DLQ, 1, {"cleanup.policy": "delete",
                           "retention.ms": str(int(settings.dlq_retention_days * 86_400_000))}),
        TopicSpec(ITEM_FEATURES, ip, {}),
        TopicSpec(ITEM_VECTORS, ip, COMPACT),
        TopicSpec(ITEM_WATCHERS, ip, {}),  # every record counts (a watcher's pull): never compacted
        TopicSpec(INDEX_VERSIONS, 1, COMPACT),
    ]


def admin_client(settings: Settings, timeout_s: float = 30.0):
    """A kafka-python admin client, retried until the broker answers (else :class:`~dreamstream.errors.BrokerUnreachable`)."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    with broker_bootstrap(settings.broker):
        while True:
            try:
                return KafkaAdminClient(**kafka_python_options(settings), client_id="dreamstream-admin")
            except (KafkaError, OSError):  # NoBrokersAvailable in kafka-python 2, renamed in 3
                if time.monotonic() > deadline:
                    raise broker_unreachable(settings.broker) from None
                time.sleep(0.3)


# Topics whose partition must be the user's partition under --partitions: the
# worker finds a user's state, and ranking finds a user's record, by it.
CO_PARTITIONED = (WATCH_EVENTS, USER_EMBEDDINGS)


class PartitionCountMismatch(RuntimeError):
    """An existing keyed topic has another partition count than the settings say."""


def partition_mismatches(settings: Settings, admin) -> list[str]:
    """Say, for each existing topic whose partition count differs from its setting, what it has and what is set.

    A worker started with the wrong count would hash users onto partitions
    their state is not on, so this is checked before anything runs; the
    item refiner's table is partitioned like ``item-watchers``
    (``--item-partitions``), and Faust stops its agent on a difference.
    """
    expected = {settings.topic(name): ("--partitions (DREAMSTREAM_PARTITIONS)", settings.partitions)
                for name in CO_PARTITIONED}
    expected[settings.topic(ITEM_WATCHERS)] = ("--item-partitions (DREAMSTREAM_ITEM_PARTITIONS)",
                                               settings.item_partitions)
    found = {t.get("topic", t.get("name")): len(t.get("partitions") or [])
             for t in admin.describe_topics(list(expected)) if not t.get("error_code")}
    return [f"{name} has {found[name]} partitions, but {flag} is {count}" for name, (flag, count) in expected.items()
            if found.get(name) and found[name] != count]


def create_topics(settings: Settings, extra: list[TopicSpec] | None = None) -> dict[str, str]:
    """Create the design's topics (and ``extra``) that do not exist yet.

    Returns ``{topic: "created" | "exists"}``. Existing topics are left as
    they are: changing the partition count of a keyed topic moves keys. So
    if ``watch-events`` or ``user-embeddings`` exists with another count than
    ``settings.partitions``, this raises :class:`PartitionCountMismatch`
    saying how to go on.
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = admin_client(settings)
    try:
        existing = set(admin.list_topics())
        result: dict[str, str] = {}
        for spec in topic_specs(settings) + (extra or []):
            full = settings.topic(spec.name)
            if full in existing:
                result[full] = "exists"
                continue
            new = NewTopic(full, spec.partitions, settings.replication, topic_configs=dict(spec.configs))
            try:
                admin.create_topics([new])
                result[full] = "created"
            except TopicAlreadyExistsError:
                result[full] = "exists"
        _refuse_mismatch(settings, admin)
        return result
    finally:
        admin.close()


def _refuse_mismatch(settings: Settings, admin) -> None:
    mismatches = partition_mismatches(settings, admin)
    if mismatches:
        raise PartitionCountMismatch(
            f"{'; '.join(mismatches)}. Keys are placed by partition, so the two must agree: set the setting to the "
            "topic's count, or give a new deployment with the new count its own DREAMSTREAM_TOPIC_PREFIX "
            "(docs/production.md, Topics)."
        )
