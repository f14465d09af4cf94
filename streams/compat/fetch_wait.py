"""Set the fetch wait Faust hard-codes for its worker consumer.

Faust builds its aiokafka consumer with ``fetch_max_wait_ms=1500`` and no
setting to change it. A broker may hold an empty fetch that long before it
answers (tansu does), and aiokafka sends no new fetch for a partition while
one is in flight, so while Faust's consumer still read watch-events, an
event arriving on a quiet partition waited up to the full 1.5 s before the
worker saw it.

Since the worker reads watch-events with its own feed (``streams.kafka.feed``,
which uses ``DREAMSTREAM_FETCH_MAX_WAIT_MS``), Faust's consumer only reads
item-features and, on standbys, changelogs, none of them latency-critical.
A short wait there only cost CPU: an idle consumer thread at 10 ms answered
~100 empty fetches a second in Python, under the same GIL as the batches.
So it gets ``FAUST_FETCH_WAIT_MS``; a fetch with data is answered at once
whatever the wait.
"""
from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.compat import shim

SHIM = shim(__name__, "faust-streaming", ("0.11", "0.16"),
             "Faust exposes its worker consumer's fetch_max_wait_ms as a setting")

FAUST_FETCH_WAIT_MS = 250

_ORIGINAL = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer


def install(fetch_max_wait_ms: int) -> None:
    """Make every Faust worker consumer created from now on fetch with this wait."""

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = _ORIGINAL(self, transport)
        consumer._fetch_max_wait_ms = int(fetch_max_wait_ms)  # read by AIOKafkaConsumer.start()
        return consumer

    faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer
