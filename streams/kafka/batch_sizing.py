"""Batch and flush sizes chosen by the lag: small while the worker is caught up, large while it is behind.

Why: the worker serves two loads with one loop. Draining a backlog (a
restart, a burst, the preloaded bench) wants the largest batches and
flush requests there are: fewer ONNX runs, fewer record batches and
changelog requests per event. A steady live load far below the maximum
wants the opposite: every event waits for the batch it is in to be
decoded, applied and sent, and for whatever else holds the loop (a
flush's rows encoded between batches), so the less each of those holds
the loop the sooner its record leaves.

The feed never waits to fill a batch (``PartitionFeed.next_batch``
returns what is buffered as soon as anything is), so at a trickle batches
are as small as the arrivals between two turns of the loop; what this
module adds is a *cap* that follows the lag (the messages between what
the worker has read and the end of each owned partition, as its last
fetch reported it):

* caught up (lag at most ``smallest``): batches of at most ``smallest``
  messages and flush requests of ``FLUSH_CHUNK_CAUGHT_UP`` bytes, so no
  single batch or encode holds the loop long;
* behind: the cap grows with the lag (the next power of two above it)
  up to ``largest`` (``batch_size``), and flush requests are the full
  ``FLUSH_CHUNK_BYTES``: throughput first while there is a backlog.

The cap is never below what is waiting (the lag counts every buffered
message), so below ``batch_size`` it holds no message back: what the lag
changes in practice is the flush request size (measured in
docs/measurements.md, issue 29), and the policy is written down here
instead of being a side effect of the consumer's ``getmany``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from streams.checkpoint.flush_pacing import FLUSH_CHUNK_BYTES

FLUSH_CHUNK_CAUGHT_UP = 256 * 1024  # a caught-up flush's request: ~130 rows, each encode ~1/4 of a full request's


@dataclass(frozen=True)
class BatchSizing:
    """The batch cap and flush request size for a lag; ``smallest`` while caught up, up to ``largest`` behind."""

    smallest: int
    largest: int

    def caught_up(self, lag: int) -> bool:
        return lag <= self.smallest

    def records(self, lag: int) -> int:
        """The most messages the next batch may take."""
        if self.caught_up(lag):
            return min(self.smallest, self.largest)
        return min(self.largest, 1 << (lag - 1).bit_length())

    def flush_chunk_bytes(self, lag: int) -> int:
        """The changelog request size of a flush that starts at this lag."""
        return FLUSH_CHUNK_CAUGHT_UP if self.caught_up(lag) else FLUSH_CHUNK_BYTES


class Positions(Protocol):
    """Where a reader is in its partitions (``streams.kafka.feed.PartitionFeed`` is one)."""

    owned: set[int]
    next_offsets: dict[int, int]

    def highwater(self, partition: int) -> int | None: ...


def total_lag(feed: Positions) -> int:
    """Messages between the feed's next offsets and the ends its last fetch saw, over its owned partitions.

    A partition not fetched yet (no end known) counts as a backlog of
    unknown size: large, so the first batches after an assignment are.
    """
    lag = 0
    for p in feed.owned:
        high = feed.highwater(p)
        if high is None:
            return 1 << 62
        lag += max(0, high - feed.next_offsets.get(p, high))
    return lag
