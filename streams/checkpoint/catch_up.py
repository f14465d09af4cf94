"""Replaying the events since the last commit without sending a user's records backwards.

Records leave as soon as a batch is applied, while its rows wait in the row
cache for the next flush (``streams.checkpoint.row_cache``). After a crash the next
owner replays everything since the last commit, cut into batches that need
not match the ones the crashed worker used; a user whose replayed events
straddle that cut would get a record with an older ``seq`` after the newer
one already published, and a compacted topic or a consumer that keeps the
latest value would briefly go back in time.

So after every assignment and rewind the worker *catches up*: it applies
the events from the committed offsets up to where the previous run can
have got, holding each user's newest record instead of sending it, and
sends the held records once the whole stretch is applied. Each of them is
at least as new as anything published before. How far the previous run
can have got is bounded because a worker never runs more than
``uncommitted_limit`` messages per partition ahead of its last commit
(it waits for its flush instead, see ``Checkpoint.maybe_flush``). While
catching up nothing is committed: the held records are not on the broker.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

UNCOMMITTED_BATCHES = 4  # a worker runs at most this many batch sizes (+ one batch) per partition ahead of its commit


def uncommitted_limit(batch_size: int) -> int:
    """Messages per partition a worker may have applied beyond its last commit (the last batch may overshoot by one)."""
    return (UNCOMMITTED_BATCHES + 1) * batch_size


@dataclass
class CatchUp:
    """The stretch to replay silently, per partition, and the newest held record of each user."""

    targets: dict[int, int]  # partition -> offset up to which the previous run may have published
    held: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # user -> (seq, record)
    # Kafka timestamp (ms) of the oldest event behind a held record: held records go out late, and how late
    # is the freshness ranking sees after a restart, so the worker's age metric observes it when they are sent
    oldest_ms: int | None = None

    @classmethod
    def after(cls, committed: dict[int, int], batch_size: int) -> "CatchUp":
        limit = uncommitted_limit(batch_size)
        return cls({p: offset + limit for p, offset in committed.items()})

    def hold(self, records: Mapping[str, bytes], seqs: Mapping[str, int], oldest_ms: int | None = None) -> None:
        """Keep each user's newest record (by its ``seq``, from ``seqs``) instead of sending it; ``oldest_ms``: the
        batch's oldest event."""
        if records and oldest_ms is not None:
            self.oldest_ms = oldest_ms if self.oldest_ms is None else min(self.oldest_ms, oldest_ms)
        for user, record in records.items():
            seq = seqs[user]
            have = self.held.get(user)
            if have is None or seq >= have[0]:
                self.held[user] = (seq, record)

    def done(self, positions: dict[int, int], highwater: Callable[[int], int | None]) -> bool:
        """Every partition read up to its target, or to its end when that comes first."""
        for partition, target in self.targets.items():
            end = highwater(partition)
            if end is None or positions.get(partition, 0) < min(target, end):
                return False
        return True

    def records(self) -> dict[str, bytes]:
        return {user: record for user, (_, record) in self.held.items()}
