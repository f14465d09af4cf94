"""How long the item refiner takes to apply a run's watches of live videos (``dreamstream bench --live-share``).

The worker reports each watch of a live video on ``item-watchers``; its item
refiner (``streams.item_refiner``, in the same process) applies them one at
a time. The bench times the user records; this waits, after them, until the
refiner has read every record the worker sent, from the worker's own
counters, so a refiner that falls behind shows as seconds here.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from dreamstream.bench.scale import metric_sums


@dataclass(frozen=True)
class RefinerCatchUp:
    sent: float  # watches of live videos the worker reported on item-watchers
    read: float  # watch records the refiner read (applied, replay, other-space)
    seconds: float  # from the call (the run's last user record) until read reached sent, or the timeout

    def line(self) -> str:
        behind = "" if self.read >= self.sent else f" (NOT caught up: {self.sent - self.read:,.0f} left)"
        return (f"item refiner: {self.read:,.0f} of {self.sent:,.0f} item-watchers records read "
                f"{self.seconds:.2f} s after the last user record{behind}")


def _counts(port: int) -> tuple[float, float] | None:
    """(watches the worker reported, watch records its refiner read), from its page; None if it cannot be read."""
    sums = metric_sums(port)
    if not sums:
        return None
    read = sum(v for (name, outcome), v in sums.items()
               if name == "dreamstream_live_refinements_total" and outcome != "tower")
    return sums.get(("dreamstream_live_watchers_total", ""), 0.0), read


def wait_for_refiner(port: int, timeout_s: float = 120.0) -> RefinerCatchUp | None:
    """Poll the worker's page until its refiner read every item-watchers record it sent (None: no page)."""
    t0 = time.monotonic()
    counts = _counts(port)
    while counts is not None and counts[1] < counts[0] and time.monotonic() - t0 < timeout_s:
        time.sleep(0.25)  # the page costs the worker's loop a few ms: polled gently
        counts = _counts(port) or counts
    return None if counts is None else RefinerCatchUp(counts[0], counts[1], time.monotonic() - t0)
