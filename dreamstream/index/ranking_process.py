"""What a ranking process sets for itself so one search stays one core's work: its heap frozen, its BLAS on one thread.

Both are process-wide (CPython has one collector, each BLAS library one
thread count), so :class:`dreamstream.client.Retriever` applies them when it
loads a version and lets a service that manages them itself opt out.
"""
from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def freeze_heap() -> None:
    """Move every object alive now out of the cyclic collector's reach (CPython's advice for long-running servers).

    Why: a ranking process holds its loaded versions and everything it
    imported for its whole life; the collector's full passes walked them and
    landed inside searches. At 10M ``ivf-pq`` items (one Faiss thread, quiet
    box) the slowest rankings spent 8 ms searching and 20-30 ms in collector
    passes: CPU p99 24-31 ms, 15-16 ms with the heap frozen
    (docs/measurements.md). Frozen objects are still freed by reference
    counting; only cycles among them outlive a version (a few MB per load at
    most). The one full collection before the freeze runs in the loader
    thread, once per load.
    """
    gc.collect()
    gc.freeze()


def pin_blas_threads(threads: int) -> None:
    """Run every BLAS call of this process (numpy's and Faiss's OpenBLAS) on ``threads`` threads.

    Why: a ranking scores its candidates exactly with one small matrix
    product (``[1 + K, D] @ [D, C]``, C ~ 4,000 at 10M items), which OpenBLAS
    splits over every core it sees. Its threads spin-wait on each other, so
    when the other cores are busy (other requests, other processes) the
    product waits for a core: on 2 shared cores it took 1.4 ms wall at
    C = 4,000 against 0.14 ms on one thread, and the slowest rankings at 10M
    items spent 30-170 ms of wall time in that wait for 9-18 ms of CPU
    (docs/measurements.md). A ranking service gets its parallelism from
    concurrent requests, as the Faiss searches do (one OpenMP thread).
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")
    log.debug("BLAS pinned to %d thread(s) for ranking", threads)
