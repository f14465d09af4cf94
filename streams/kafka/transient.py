"""The errors that mean "the broker is away or the group is rebalancing": wait, then redo from the last commit."""
from __future__ import annotations

import asyncio

from aiokafka.errors import KafkaError

TRANSIENT = (KafkaError, OSError, asyncio.TimeoutError)
