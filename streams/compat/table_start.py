"""Start Faust's table manager without its one-second nap.

Faust's ``TableManager.on_start`` sleeps 1.0 s before it registers the
tables' changelog channels and starts recovery, so that tables declared
while the app starts are in by then. The worker declares its one table in
``create_app``, before the app starts, so the nap only delays every start:
measured, 1.0 s of each worker start (and warm restart) between "Waiting
for tables to be registered" and the table starting, before the group join
can even begin. This runs the same two steps without it.
"""
from __future__ import annotations

from typing import Any

from faust.tables.manager import TableManager

from streams.compat import shim

SHIM = shim(__name__, "faust-streaming", ("0.11", "0.16"),
            "Faust's TableManager.on_start no longer sleeps before registering the tables")

_ORIGINAL = TableManager.on_start


def install() -> None:
    """Every TableManager started from now on registers its tables and starts recovery at once."""

    async def on_start(self: Any) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()

    TableManager.on_start = on_start
