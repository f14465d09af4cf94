"""A dataset as one time-ordered event log, cut at a time into a training past and a streamed future.

Why a log and not a per-user split: the prequential protocol replays the
future exactly as the stream worker meets it, event by event in event time,
so every later event is predicted from the user's state just before it (the
record the worker would have published), whether the user existed at the
cutoff or not. numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property

import numpy as np

from dreamstream.data.recbole import Dataset


@dataclass(frozen=True, eq=False)
class EventLog:
    """Events sorted by (timestamp, file row): ``user``, ``item``, ``weight`` and ``ts`` (seconds) [N].

    ``weight`` is each event's engagement weight as the worker computes it
    (:func:`dreamstream.engagement.dataset_weights`); ``rows`` the dataset row
    of each event (None for a hand-built log).
    """

    user: np.ndarray
    item: np.ndarray
    weight: np.ndarray
    ts: np.ndarray
    n_users: int
    n_items: int
    rows: np.ndarray | None = None

    @classmethod
    def from_dataset(cls, ds: Dataset, weights: np.ndarray | None = None, rows: np.ndarray | None = None
                     ) -> "EventLog":
        """The dataset's events (or only ``rows`` of it) in time order; ``weights`` per dataset row (default 1)."""
        rows = np.arange(ds.n_interactions) if rows is None else np.asarray(rows, np.int64)
        order = rows[np.lexsort((rows, ds.timestamp[rows]))]
        weights = np.ones(ds.n_interactions, np.float32) if weights is None else np.asarray(weights, np.float32)
        return cls(ds.user[order].astype(np.int64), ds.item[order].astype(np.int64), weights[order],
                   ds.timestamp[order].astype(np.float64), ds.n_users, ds.n_items, order)

    def __len__(self) -> int:
        return int(self.user.size)

    def head(self, n: int) -> "EventLog":
        """The first ``n`` events (the past of a cutoff)."""
        return EventLog(self.user[:n], self.item[:n], self.weight[:n], self.ts[:n], self.n_users, self.n_items,
                        None if self.rows is None else self.rows[:n])

    def cut_at_fraction(self, fraction: float) -> int:
        """Index of the first event at or after the time that leaves ``fraction`` of the events before it.

        The cut falls on a timestamp boundary so no two events of the same
        second sit on both sides of it.
        """
        if not 0 < fraction < 1:
            raise ValueError(f"a cutoff fraction must be in (0, 1), got {fraction}")
        t = self.ts[min(int(len(self) * fraction), len(self) - 1)]
        return int(np.searchsorted(self.ts, t, side="left"))

    def cut_at_time(self, when: datetime | float) -> int:
        """Index of the first event at or after ``when`` (a datetime or epoch seconds)."""
        t = when.timestamp() if isinstance(when, datetime) else float(when)
        return int(np.searchsorted(self.ts, t, side="left"))

    def time_of(self, index: int) -> str:
        """ISO time of event ``index`` (UTC), for reports."""
        return datetime.fromtimestamp(float(self.ts[min(index, len(self) - 1)]), timezone.utc).isoformat(timespec="seconds")

    @cached_property
    def by_user(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(event indexes grouped by user in time order, each event's position within its user, user starts [U+1])."""
        order = np.lexsort((np.arange(len(self)), self.user))  # stable: time order kept inside a user
        start = np.searchsorted(self.user[order], np.arange(self.n_users + 1))
        position = np.empty(len(self), np.int64)
        position[order] = np.arange(len(self)) - start[self.user[order]]
        return order, position, start

    def sequences(self) -> list[np.ndarray]:
        """Per user (all ``n_users``), their event indexes in time order."""
        order, _, start = self.by_user
        return [order[start[u]:start[u + 1]] for u in range(self.n_users)]
