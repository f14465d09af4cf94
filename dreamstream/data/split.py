"""Train / validation / test split of an interaction log, per the design's protocol.

Default: per user, chronological leave-last-out over *positive* rows — the
last positive row is the test target, the second-to-last the validation
target, everything of that user before the validation row trains. Users with
fewer than ``min_positive`` positive rows are dropped. Event order is
(timestamp, row order in ``.inter``): a tie is broken by the file, so a
dataset without timestamps is simply in file order.

Alternative (a flag): a global time cut — training is everything before the
cut, each user's target is their first positive row in the validation
(test) period. It is closer to what a deployed model faces, at the price of
dropping users who are not active in both periods.

A row is positive when it is a watch that is not a quick skip
(:meth:`dreamstream.engagement.Engagement.is_positive`, the rule the stream
worker uses) when the dataset has ``watch_ms`` and ``duration_ms``, otherwise
when its rating is > 0. Skips stay in the history (the user models weigh them
negatively) but are never targets and never masked. numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from dreamstream.data.recbole import Dataset
from dreamstream.engagement import Engagement

UPTO = ("valid", "test")


def positive_rows(ds: Dataset, engagement: Engagement | None = None) -> np.ndarray:
    """bool [N]: which interactions count as the user liking the item."""
    if "watch_ms" in ds.columns and "duration_ms" in ds.columns:
        return (engagement or Engagement()).is_positive(ds.columns["watch_ms"], ds.columns["duration_ms"])
    return ds.rating > 0


def event_order(ds: Dataset) -> np.ndarray:
    """Row indexes sorted by (user, timestamp, row): every user's events, oldest first."""
    return np.lexsort((np.arange(ds.n_interactions), ds.timestamp, ds.user))


@dataclass(frozen=True, eq=False)
class Split:
    """Which rows train, and each kept user's validation and test row."""

    dataset: Dataset
    positive: np.ndarray  # bool [N]
    users: np.ndarray  # int64 [n_kept], dataset user indexes, ascending
    train_rows: np.ndarray  # int64, row indexes that train (kept users only), in event order per user
    valid_rows: np.ndarray  # int64 [n_kept]
    test_rows: np.ndarray  # int64 [n_kept]

    @property
    def n_users(self) -> int:
        return int(self.users.shape[0])

    def targets(self, upto: str = "valid") -> np.ndarray:
        """int64 [n_kept]: the held-out item of each kept user for ``upto``."""
        return self.dataset.item[self._cut_rows(upto)]

    def train_positive_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(user, item) of the positive training rows: the edges of the behaviour graph."""
        rows = self.train_rows[self.positive[self.train_rows]]
        return self.dataset.user[rows], self.dataset.item[rows]

    def history(self, upto: str = "valid") -> list[np.ndarray]:
        """Per kept user, the row indexes (event order) the model may see before predicting ``upto``.

        ``"valid"``: the user's training rows. ``"test"``: every row before the
        test row, so the validation row and anything after it are included.
        """
        if upto == "valid":
            return self._train_by_user
        order, pos, start = self._order
        cut = pos[self._cut_rows(upto)]
        return [order[s:c] for s, c in zip(start[self.users], cut)]

    def exclude_items(self, upto: str = "valid") -> list[np.ndarray]:
        """Per kept user, the items to mask when ranking for ``upto``: their positive history.

        Skipped items are not masked: a skip is not a consumed item.
        """
        return [np.unique(self.dataset.item[rows[self.positive[rows]]]) for rows in self.history(upto)]

    def _cut_rows(self, upto: str) -> np.ndarray:
        if upto not in UPTO:
            raise ValueError(f"upto must be one of {UPTO}, got {upto!r}")
        return self.valid_rows if upto == "valid" else self.test_rows

    @cached_property
    def _order(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows in event order, position of each row in it, start of each user's block)."""
        order = event_order(self.dataset)
        pos = np.empty_like(order)
        pos[order] = np.arange(order.size)
        start = np.searchsorted(self.dataset.user[order], np.arange(self.dataset.n_users))
        return order, pos, start

    @cached_property
    def _train_by_user(self) -> list[np.ndarray]:
        bounds = np.searchsorted(self.dataset.user[self.train_rows], self.users, side="right")
        return np.split(self.train_rows, bounds[:-1]) if self.users.size else []


def leave_last_out(ds: Dataset, min_positive: int = 5, engagement: Engagement | None = None) -> Split:
    """Per user: last positive row tests, second-to-last validates, the rows before it train."""
    if min_positive < 2:
        raise ValueError(f"min_positive must be >= 2 (one validation and one test row), got {min_positive}")
    positive = positive_rows(ds, engagement)
    order = event_order(ds)
    pos_order = order[positive[order]]  # positive rows, by user then time
    users_of = ds.user[pos_order]
    counts = np.bincount(users_of, minlength=ds.n_users)
    ends = np.cumsum(counts)  # one past each user's last positive in pos_order
    kept = np.flatnonzero(counts >= min_positive)
    test_rows = pos_order[ends[kept] - 1]
    valid_rows = pos_order[ends[kept] - 2]
    train_rows = _rows_before(ds, order, kept, valid_rows)
    return Split(ds, positive, kept.astype(np.int64), train_rows, valid_rows.astype(np.int64), test_rows.astype(np.int64))


def global_time_split(ds: Dataset, valid_frac: float = 0.1, test_frac: float = 0.1, min_positive: int = 5,
                      engagement: Engagement | None = None) -> Split:
    """Cut the log by global event time into train / validation / test periods.

    The first ``1 - valid_frac - test_frac`` of all rows (in (timestamp, row)
    order) form the training period, the next ``valid_frac`` the validation
    period, the rest the test period. A user is kept when they have a
    positive row in both later periods and at least ``min_positive`` positive
    rows counting those two; their targets are their first positive row in
    each period and they train on their rows of the training period.
    """
    if not (0 < valid_frac and 0 < test_frac and valid_frac + test_frac < 1):
        raise ValueError(f"need 0 < valid_frac, 0 < test_frac and valid_frac + test_frac < 1, "
                         f"got {valid_frac} and {test_frac}")
    positive = positive_rows(ds, engagement)
    n = ds.n_interactions
    by_time = np.lexsort((np.arange(n), ds.timestamp))
    period = np.empty(n, dtype=np.int8)
    period[by_time] = np.searchsorted([round(n * (1 - valid_frac - test_frac)), round(n * (1 - test_frac))],
                                      np.arange(n), side="right")
    order = event_order(ds)  # by user, then time: the first hit per user below is their earliest
    targets = []
    for p in (1, 2):
        rows = order[positive[order] & (period[order] == p)]
        first = np.full(ds.n_users, -1, dtype=np.int64)
        users_of = ds.user[rows]
        is_first = np.ones(rows.size, dtype=bool)
        is_first[1:] = users_of[1:] != users_of[:-1]
        first[users_of[is_first]] = rows[is_first]
        targets.append(first)
    train_pos = np.bincount(ds.user[positive & (period == 0)], minlength=ds.n_users)
    kept = np.flatnonzero((targets[0] >= 0) & (targets[1] >= 0) & (train_pos + 2 >= min_positive))
    in_train = order[(period[order] == 0) & np.isin(ds.user[order], kept)]
    return Split(ds, positive, kept.astype(np.int64), in_train.astype(np.int64), targets[0][kept], targets[1][kept])


def _rows_before(ds: Dataset, order: np.ndarray, kept: np.ndarray, cut_rows: np.ndarray) -> np.ndarray:
    """All rows of the kept users strictly before their cut row in event order (event order kept)."""
    pos = np.empty_like(order)
    pos[order] = np.arange(order.size)
    start = np.searchsorted(ds.user[order], kept)
    stop = pos[cut_rows]
    lengths = stop - start
    if lengths.sum() == 0:
        return np.zeros(0, dtype=np.int64)
    # positions start..stop-1 for every kept user, concatenated without a Python loop
    offsets = np.repeat(start - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return order[np.arange(lengths.sum()) + offsets].astype(np.int64)
