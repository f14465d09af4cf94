"""Stopping an aiokafka consumer while the broker is away must not raise ``CancelledError``.

aiokafka 0.14's ``Fetcher.close()`` cancels each fetch request in flight and
awaits it. A request that failed (the broker away) sleeps out
``retry_backoff_ms`` before it returns, and that sleep does not expect the
cancellation: ``CancelledError`` leaves the task, ``close()`` re-raises it,
and ``consumer.stop()`` raises ``CancelledError`` in a task nobody
cancelled. (Reproduced in ``tests/streams/test_fetch_cancel.py``: stop the
broker, wait past one failed fetch, stop the consumer.) In the worker that
is reachable in two places. The user-row completion after a rebalance
stops its consumer once it has read; with the broker restarting meanwhile,
the ``CancelledError`` would end the worker's batch loop the way a shutdown
does, leaving its partitions assigned and unread (the batch loop now also
refuses to stop on a ``CancelledError`` nobody asked for). And Faust's
consumer thread, stopped at shutdown during an outage, is left "crashed"
and the process exits non-zero: the tail of a CI failure of the
broker-restart test on 2026-11-24 shows exactly that traceback.

aiokafka already treats a cancellation *during the request* as "the result
is no longer of interest" and returns. :func:`install` extends that to the
backoff sleep, and only for a fetcher that is closing.
"""
from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.consumer.fetcher import Fetcher

from streams.compat import shim

SHIM = shim(__name__, "aiokafka", ("0.10", "0.15"),
             "aiokafka's Fetcher.close() no longer re-raises CancelledError from a request in its backoff sleep (tests/streams/test_fetch_cancel.py skips itself then)")

_ORIGINAL = Fetcher._proc_fetch_request


async def _proc_fetch_request(self: Any, *args: Any, **kwargs: Any) -> bool:
    try:
        return await _ORIGINAL(self, *args, **kwargs)
    except asyncio.CancelledError:
        if self._closed:  # close() cancelled it, in the backoff sleep after a failed request
            return False
        raise


def install() -> None:
    """Patch aiokafka's fetcher for every consumer of this process (idempotent)."""
    Fetcher._proc_fetch_request = _proc_fetch_request


def cancel_requested() -> bool:
    """Was this task asked to stop? (Python < 3.11 cannot tell: then every CancelledError counts as asked.)"""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return task is None or cancelling is None or cancelling() > 0
