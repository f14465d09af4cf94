"""A batch's events sorted into users and waves: the order in which ``apply_batch`` may step them.

Batching without reordering: events of one user must be applied in their
order, so a batch is cut into *waves*: wave ``w`` holds the ``w``-th event of
every user that has one. Each wave is one ``session.run`` per step over all
its users. A replayed event (at or before the row's stored position) is
skipped here, and an event whose video is not in the item store is set
aside for a dead letter. The batch's item vectors are one
``ItemLookup.lookup`` (a matrix and a found mask), not a lookup per event.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter
from typing import Mapping, Protocol, Sequence

import numpy as np

from streams.domain.state import UserState
from streams.domain.validate import Event

_STREAM_ORDER = attrgetter("partition", "offset", "index")


class ItemLookup(Protocol):
    """What a plan needs of the item store (``streams.items.store.ItemStore`` is one)."""

    def lookup(self, videos: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """float32 [n, D] vectors and a bool [n] found mask."""

    def live_mask(self, videos: Sequence[str]) -> np.ndarray:
        """bool [n]: which videos are live (new, refined by their watchers: ``streams.items.live_videos``)."""


def in_stream_order(events: Sequence[Event]) -> list[Event]:
    """The batch's events by (partition, offset, index): the order they were written in.

    The worker's feed (``streams.kafka.feed``) already hands each partition's
    records over in offset order; sorting here keeps ``apply_batch`` correct
    for any caller, because an event applied after a later one of the same
    user would be taken for a replay and skipped. (It was added when the
    worker still read through a Faust stream, which could deliver re-read
    records after newer ones around a seek.)
    """
    return sorted(events, key=_STREAM_ORDER)


@dataclass
class Plan:
    """A batch's events sorted into users and waves, as columns: one row per touched user, one entry per event to apply.

    Why columns: with live traffic a batch holds about one event per user,
    and building per-wave lists event by event (rows, times, weights, item
    vectors) cost more than the ONNX steps. The event loop only assigns each
    event its user's row and its rank among that user's events; waves are
    then index arrays into columns built once.
    """

    users: list[str]  # touched users, in order of first appearance; row i is users[i]
    bases: list[UserState]  # row i's state before this batch
    lasts: list[Event | None]  # row i's last event to apply (None: all its events were replays or unknown)
    rows: np.ndarray  # per event to apply: its user's row
    ranks: np.ndarray  # per event: how many of its user's events come before it (its wave)
    events: list[Event]  # the events to apply, in stream order
    vectors: np.ndarray  # their item vectors, float32 [events, D]
    live: np.ndarray | None = None  # with ``live`` asked for: bool [events], whose video is live (streams.items.live_videos)
    replays: int = 0  # events at or before their user's stored position: skipped
    unknown: list[Event] = field(default_factory=list)  # events whose video is not in the item table: dead letters


def plan(states: Mapping[str, UserState | None], events: Sequence[Event], items: ItemLookup,
         empty: UserState, live: bool = False) -> Plan:
    """Rows and waves of the events to apply; replays and unknown videos are counted in the plan and left out.

    ``live``: also say which events' videos are live (the same ids, looked up once).
    """
    ordered = in_stream_order(events)
    videos = [ev.video for ev in ordered]
    matrix, found = items.lookup(videos)
    live_all = items.live_mask(videos) if live else None
    known = found.tolist()
    row: dict[str, int] = {}
    users: list[str] = []
    bases: list[UserState] = []
    lasts: list[Event | None] = []
    rows: list[int] = []
    ranks: list[int] = []
    counts: list[int] = []
    todo: list[Event] = []
    take: list[int] = []  # per event to apply: its row of ``matrix``
    replays = 0
    unknown: list[Event] = []
    for j, ev in enumerate(ordered):
        i = row.get(ev.user)
        if i is None:
            i = row[ev.user] = len(users)
            users.append(ev.user)
            bases.append(states.get(ev.user) or empty)
            lasts.append(None)
            counts.append(0)
        if _replayed(ev, bases[i], lasts[i]):
            replays += 1
            continue
        if not known[j]:
            unknown.append(ev)
            continue
        lasts[i] = ev
        rows.append(i)
        ranks.append(counts[i])
        counts[i] += 1
        todo.append(ev)
        take.append(j)
    return Plan(users, bases, lasts, np.array(rows, np.int64), np.array(ranks, np.int64), todo, matrix[take],
                None if live_all is None else live_all[take], replays, unknown)


def _replayed(ev: Event, base: UserState, last: Event | None) -> bool:
    """At or before the stored position, or not after the last event of this batch in the same partition."""
    if base.applied(ev.partition, ev.offset, ev.index):
        return True
    return last is not None and last.partition == ev.partition and last.position >= ev.position


def waves(ranks: np.ndarray) -> list[np.ndarray]:
    """Wave ``w``: the indexes of every user's ``w``-th event (each user at most once, so a wave is one batched step)."""
    if not len(ranks):
        return []
    order = np.argsort(ranks, kind="stable")
    bounds = np.searchsorted(ranks[order], np.arange(int(ranks.max()) + 2))
    return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
