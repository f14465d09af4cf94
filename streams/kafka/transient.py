"""The errors that mean "the broker is away or the group is rebalancing": wait, then redo from the last commit."""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from aiokafka.errors import KafkaError

TRANSIENT = (KafkaError, OSError, asyncio.TimeoutError)

log = logging.getLogger("streams.worker")


async def until_taken(send: Callable[[], Awaitable[None]], what: str) -> None:
    """Run ``send`` until the broker takes it; a transient error is logged (``what`` failed) and retried after 1 s.

    For the agents fed by Faust's ``take_events`` (the item tower, the item
    refiner): Faust acknowledges the batch when the handler returns *or
    raises*, so raising would acknowledge input whose output never left.
    What ``send`` writes must be idempotent or deduplicated downstream.
    """
    while True:
        try:
            await send()
            return
        except TRANSIENT as err:
            log.warning("%s failed (%r); retrying in 1s", what, err)
            await asyncio.sleep(1.0)
