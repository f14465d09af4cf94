"""Lower the fetch wait Faust hard-codes for its worker consumer.

Faust builds its aiokafka consumer with ``fetch_max_wait_ms=1500`` and no
setting to change it. A broker may hold an empty fetch that long before it
answers (tansu does), and aiokafka sends no new fetch for a partition while
one is in flight, so an event arriving on a quiet partition waited up to the
full 1.5 s before the worker even saw it: that was most of the
event-to-embedding latency measured at moderate rates. The wait becomes the
``fetch_max_wait_ms`` setting; a few ms more broker round trips on an idle
stream cost nothing next to it.
"""
from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

_ORIGINAL = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer


def install(fetch_max_wait_ms: int) -> None:
    """Make every Faust worker consumer created from now on fetch with this wait."""

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = _ORIGINAL(self, transport)
        consumer._fetch_max_wait_ms = int(fetch_max_wait_ms)  # read by AIOKafkaConsumer.start()
        return consumer

    faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer
