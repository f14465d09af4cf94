"""Keep CPython's cyclic garbage collector off the worker's latency path.

Why: the collector stops the loop while it walks the container objects it
tracks, and the worker makes them at a high rate. Two measured costs, two
remedies, both applied once the worker has started and published its first
output (``DREAMSTREAM_GC_TUNING=false`` turns both off):

* **Full passes over startup objects.** A started worker tracks ~125,000
  objects made at import and startup (Faust, mode, aiokafka, pydantic,
  numpy), alive for the life of the process; each full (generation 2) pass
  walked them all and stopped the loop for 80-115 ms, a few times a minute.
  ``gc.freeze()`` moves everything alive at that moment into a permanent
  generation the collector no longer walks (CPython's documented advice for
  long-running servers); ~12,000 tracked objects were left. At 6,000
  events/s (~20 s of load): full passes 14-46 ms in all, longest pause
  10-22 ms, against 256-304 ms and 94-116 ms before; p99 132-146 ms against
  162-179 ms.
* **Young passes over a batch in flight.** A batch makes ~10 container
  objects an event (events, tuples, lists) that live until its output is
  sent. With the default young threshold (700 allocations) a batch of
  thousands of events was collected dozens of times while alive, its objects
  promoted and walked again by the older generations: at 31,000 events/s,
  1,827 young, 166 middle and 15 full passes took 0.58 s in ~15 s, ~4% of
  the worker. With a young threshold of 50,000 reference counting frees a
  batch's objects before a pass comes due, and none ran in that window.

The bench's reader keeps a tuple for every record it reads (~600,000 in a
latency run), and its full passes over them stopped it long enough to add
up to hundreds of ms to the latencies it measured (p99 488-623 ms against
238-280 ms in alternating runs at 31,000 events/s); it reads with
:func:`fewer_young_passes`.

Reference counting still frees objects as usual; only cycles wait longer
(at most 50,000 allocations), and ``gc.collect()`` right before the freeze
leaves no cyclic garbage among the frozen objects.
"""
from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

YOUNG_THRESHOLD = 50_000  # allocations between young passes (CPython's default: 700)


def tune_collector() -> None:
    """Collect once, exclude every object alive now from future collections, and space young passes out."""
    t0 = time.perf_counter()
    gc.collect()
    gc.freeze()
    _space_young_passes()
    log.info("gc tuned: froze startup objects frozen=%d collect_ms=%.0f young_threshold=%d", gc.get_freeze_count(),
             (time.perf_counter() - t0) * 1e3, YOUNG_THRESHOLD)


@contextmanager
def fewer_young_passes() -> Iterator[None]:
    """The young threshold at ``YOUNG_THRESHOLD`` while the block runs: for a reader that keeps what it reads."""
    before = _space_young_passes()
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _space_young_passes() -> tuple[int, int, int]:
    """Set the young threshold to ``YOUNG_THRESHOLD``, keeping the older generations'; returns the thresholds before."""
    before = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, *before[1:])
    return before
