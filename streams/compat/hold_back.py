"""Keep Faust's consumer from fetching a topic it is subscribed to.

The worker needs Faust subscribed to watch-events - that is what makes the
Faust group assign its partitions, and with them the user table's changelog
partitions, recovery and standbys - but reads the records itself
(``streams.kafka.feed``). Faust has no setting for "assign but do not consume":
it pauses every partition during a rebalance and resumes the stream
partitions when recovery is done. Its pause is bookkeeping (the set of
"active" partitions its fetch loop asks aiokafka for), so the held topics
are taken out of that set whenever Faust reads it. Faust's livelock check
("Stream has not started processing TP ...", an ERROR every few seconds per
partition) is skipped for them too: nothing is wrong, another reader has them.
"""
from __future__ import annotations

from typing import Any

from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from streams.compat import shim

SHIM = shim(__name__, "faust-streaming", ("0.11", "0.16"),
             "Faust can assign a subscribed topic without fetching it (a setting or a public hook for its active partitions)")

HELD: set[str] = set()
_ORIGINAL = Consumer._get_active_partitions
_ORIGINAL_VERIFY = AIOKafkaConsumerThread.verify_event_path


def _active_without_held(self: Any) -> Any:
    tps = _ORIGINAL(self)
    if HELD:
        tps.difference_update({tp for tp in tps if tp.topic in HELD})
    return tps


def _verify_unless_held(self: Any, now: float, tp: Any) -> None:
    if tp.topic in HELD:
        return None
    return _ORIGINAL_VERIFY(self, now, tp)


def hold_back(topic: str) -> None:
    """From now on no Faust consumer in this process fetches ``topic`` (it is still assigned)."""
    HELD.add(topic)
    Consumer._get_active_partitions = _active_without_held
    AIOKafkaConsumerThread.verify_event_path = _verify_unless_held
