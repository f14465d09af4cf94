"""The strict protocol's group rule: an event is ranked from the state before its user's same-timestamp group.

MovieLens (and any log written by a client that batches) stores a page of
ratings under one second; a file's row order inside that second is not an
order of requests. No ranking request can fall between two events of the
same user and the same timestamp, so a live service ranks each of them from
what it knew before the group, and the group is applied to the user's state
at once. Scoring the second event of a page from the first ("lenient", ties
broken by file row, as most published evaluations do) credits a recency
that no service has: a 120-s decayed vector is then mostly "the other films
on this page" (ml-100k-dev: 52% of the streamed events have a same-second
event of the same user before them in row order).

:func:`before_group` applies the rule to any :class:`QuerySet`: each query
keeps (sees and masks) only the events of its history strictly earlier than
its own timestamp. Histories are already per user and time ordered, so the
rule is a cut of each history, and every model (DREAM's readout, OPAL,
SASRec, item-kNN, EASE) is scored under it alike.
"""
from __future__ import annotations

import numpy as np

from dreamstream.evaluation.prequential import QuerySet

STRICT = "strict: each event ranked from the state before its user's same-timestamp group"
LENIENT = "lenient (for comparison with published numbers): same-timestamp ties broken by file row"


def before_group(qs: QuerySet) -> QuerySet:
    """``qs`` with every query's seen and masked rows cut to those strictly earlier than the query's timestamp."""
    ts = qs.log.ts
    when = ts[qs.queries]
    seen = [rows[ts[rows] < t] for rows, t in zip(qs.seen, when)]
    masked = [rows[ts[rows] < t] for rows, t in zip(qs.masked, when)]
    return QuerySet(qs.log, qs.queries, seen, masked)


def grouping(qs: QuerySet, strict: bool) -> QuerySet:
    """The queries under the protocol's rule: :func:`before_group` when ``strict``, else as they are."""
    return before_group(qs) if strict else qs


def tied_share(qs: QuerySet) -> float:
    """Share of queries with an event of the same user and timestamp earlier in file order (what strict removes)."""
    ts = qs.log.ts
    tied = [bool(rows.size) and ts[rows[-1]] == ts[q] for rows, q in zip(qs.masked, qs.queries)]
    return float(np.mean(tied)) if tied else 0.0
