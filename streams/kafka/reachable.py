"""Starting a Kafka client while the broker may be away: wait for it, as Faust's own clients do.

A worker can start (or its loop can reach a client's start) in the seconds a
broker is restarting: aiokafka's ``start()`` then raises "Unable to
bootstrap", and a raise there crashes the Faust app (seen: the broker
restarted while a worker's event feed was starting, tests/scale/test_rebalance.py).
The clients a worker starts before its loop (the event feed, the changelog
producer, the item table's reader) go through :func:`start_when_reachable`;
one started inside a step (:mod:`streams.compat.tansu_rows`) raises into the
loop, which waits and redoes from the last commit (``Worker.run``).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from streams.kafka.transient import TRANSIENT

log = logging.getLogger("streams.worker")

RETRY_S = 1.0


async def start_when_reachable(make: Callable[[], Any], what: str) -> Any:
    """``make()`` a client and start it; while the broker is unreachable, close it, wait ``RETRY_S`` and try a new one."""
    while True:
        client = make()
        try:
            await client.start()
            return client
        except TRANSIENT as err:
            log.warning("%s: no broker yet (%r); retrying in %.0fs", what, err, RETRY_S)
            await client.stop()  # a half-started client holds connections and tasks
            await asyncio.sleep(RETRY_S)
