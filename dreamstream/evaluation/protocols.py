"""The two evaluation protocols as data: what a model fits on, what chooses it, what it is judged on.

* :func:`prequential` — a time cutoff (the design's protocol for a streaming
  recommender): models fit on the log before it; the last
  ``valid_fraction`` of that past validates (prequentially, the same way),
  then the chosen configuration is refitted on the whole past; every event
  after the cutoff is a test query seen from everything before it, and a
  frozen copy of the queries stops each history at the cutoff.
* :func:`leave_last_out` — per user, the last positive event tests and the
  one before validates (:func:`dreamstream.data.split.leave_last_out`);
  models fit on the rest and are not refitted (the validation targets are
  one per user, refitting on them would leak the test user's recent past
  into the item vectors only for the models that refit).

Every model, baseline or ours, goes through the same :class:`Protocol`, so
the table compares like with like. Both are strict by default: every query
is ranked from the state before its user's same-timestamp group
(:mod:`dreamstream.evaluation.groups`); ``strict=False`` is the lenient
variant (ties broken by file row), kept for comparison with published numbers.

Validation/test discipline: unless ``final``, a protocol's ``test`` *is* its
validation window (scored by the models fitted before it, no refit): the
numbers one develops against and makes choices on. The test window is
scored only with ``final`` (``dreamstream evaluate --final``, once per
release, which records the commit it scored).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dreamstream.data.recbole import Dataset
from dreamstream.data.split import leave_last_out as loo_split
from dreamstream.evaluation.events import EventLog
from dreamstream.evaluation.groups import LENIENT, STRICT, grouping, tied_share
from dreamstream.evaluation.prequential import QuerySet, stream_queries


@dataclass(frozen=True, eq=False)
class Protocol:
    name: str
    fit_log: EventLog            # what a model trains on while it is being chosen
    valid: QuerySet              # what chooses it (epochs, hyperparameters)
    refit_log: EventLog | None   # what the chosen configuration is refitted on (None: keep the chosen fit)
    test: QuerySet               # what it is judged on
    frozen: QuerySet | None      # the test queries with histories stopped at the cutoff (prequential only)
    describe: dict               # for the report: cutoff times, event and user counts


def prequential(log: EventLog, cutoff: int, valid_fraction: float = 0.125, strict: bool = True,
                final: bool = True) -> Protocol:
    """The streaming protocol at event index ``cutoff`` of ``log`` (``final`` False: its validation window as test)."""
    past = log.head(cutoff)
    valid_cut = past.cut_at_fraction(1.0 - valid_fraction)
    valid = grouping(stream_queries(past, valid_cut), strict)
    scored_log, start = (log, cutoff) if final else (past, valid_cut)
    lenient = stream_queries(scored_log, start)
    test = grouping(lenient, strict)
    known = np.zeros(log.n_users, bool)
    known[scored_log.user[:start]] = True
    streamed = scored_log.user[start:]
    describe = {"protocol": "prequential", "grouping": STRICT if strict else LENIENT,
                "window": "test" if final else "validation (development: --final scores the test window)",
                "cutoff": log.time_of(cutoff), "valid_from": past.time_of(valid_cut),
                "train_events": cutoff, "valid_events": cutoff - valid_cut, "scored_events": len(test),
                "scored_users": int(np.unique(streamed).size),
                "scored_users_new": int(np.unique(streamed[~known[streamed]]).size),
                "tied_share": round(tied_share(lenient), 4)}
    frozen = grouping(stream_queries(scored_log, start, frozen=True), strict)
    return Protocol("prequential", past.head(valid_cut), valid, past if final else None, test, frozen, describe)


def leave_last_out(ds: Dataset, weights: np.ndarray, min_positive: int = 5, strict: bool = True,
                   final: bool = True) -> Protocol:
    """Per-user leave-last-out over the dataset's positive events (users with fewer than ``min_positive`` dropped).

    ``final`` False scores the validation event of each user instead of the test event.
    """
    split = loo_split(ds, min_positive)
    log = EventLog.from_dataset(ds, weights)
    index = np.empty(ds.n_interactions, np.int64)
    index[log.rows] = np.arange(len(log))

    def queries(upto: str) -> QuerySet:
        rows = split.valid_rows if upto == "valid" else split.test_rows
        seen = [np.sort(index[h]) for h in split.history(upto)]
        return QuerySet(log, index[rows], seen, seen)

    valid, test = queries("valid"), queries("test" if final else "valid")
    describe = {"protocol": "leave-last-out", "grouping": STRICT if strict else LENIENT,
                "window": "test" if final else "validation (development: --final scores the test window)",
                "users": split.n_users, "train_events": int(split.train_rows.size), "tied_share": round(tied_share(test), 4)}
    return Protocol("leave-last-out", EventLog.from_dataset(ds, weights, split.train_rows), grouping(valid, strict),
                    None, grouping(test, strict), None, describe)
