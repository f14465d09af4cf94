"""Waiting for a topic's partition metadata with aiokafka, which has no public call for it.

A producer that builds its own record batches (``streams.kafka.batch_send``)
must know a topic's partitions before its first ``send_batch``, and a
group-less follower (``streams.kafka.item_table``) must see the topic's
partitions before it assigns them. aiokafka does this inside ``send`` and
``subscribe`` only.
"""
from __future__ import annotations

from typing import Any

from streams.compat import shim

SHIM = shim(__name__, "aiokafka", ("0.10", "0.15"),
            "aiokafka offers a public call that waits for a topic's metadata")


async def wait_for_topic(producer: Any, topic: str) -> None:
    """Block until the producer's metadata knows ``topic`` (aiokafka's own wait inside ``send``)."""
    await producer.client._wait_on_metadata(topic)


async def refresh_metadata(consumer: Any) -> bool:
    """Fetch the cluster's metadata for a group-less consumer; True when the broker answered."""
    return bool(await consumer._client.fetch_all_metadata())
