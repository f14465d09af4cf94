"""A member of a group's first generation on tansu leaves the group when it stops.

tansu numbers a group's generations from 0; Kafka from 1. aiokafka sends
LeaveGroup only for ``generation > 0``, so on tansu a worker that joined a
new group (every first start) stopped without leaving it: the group kept
the stopped member until its session timed out, and a worker started in
that window joined a group whose leader was the stopped member. Measured
(bench-scale, 10M videos, warm restart 1.7 s after the first worker's
exit): join 3.0 s, then 5 s waiting for the dead leader's assignment, a
rebalance and a second 3.0 s join: 13.0 s from launch to serving where the
same restart after a worker that left takes ~5 s. On Kafka a joined member
never has generation 0, so this is on for the development broker only.
"""
from __future__ import annotations

import logging
from typing import Any

from aiokafka.consumer.group_coordinator import GroupCoordinator

from dreamstream.settings import Settings
from streams.compat import shim

log = logging.getLogger(__name__)

SHIM = shim(__name__, "tansu", ("0", "0"), "tansu numbers a group's first generation 1, as Kafka does")

_ORIGINAL = GroupCoordinator._maybe_leave_group


def install(settings: Settings) -> None:
    """On the development broker, a consumer in generation 0 sends LeaveGroup when it closes, as any other does."""
    if not settings.dev_broker or GroupCoordinator._maybe_leave_group is not _ORIGINAL:
        return

    async def maybe_leave_group(self: Any) -> None:
        if self.generation == 0 and self._group_instance_id is None:
            self.generation = 1  # aiokafka's check only: LeaveGroup names the group and the member, not the generation
        await _ORIGINAL(self)

    GroupCoordinator._maybe_leave_group = maybe_leave_group
