"""The prequential (streaming) protocol: every event after a cutoff, predicted from the state just before it.

This is how a streaming recommender is judged (Gama et al., "On evaluating
stream learning algorithms", 2013; the "test-then-train" loop): models are
trained on the log before a time cutoff and frozen; then the future is
replayed in event time and each event is ranked against the full catalogue
from what the user did before it, *including* the earlier future events,
exactly as the stream worker would have published the user's record at that
moment. The user's earlier items are masked (a ranking service does not
re-serve what a user watched). Metrics are HitRate and NDCG @10/20/50 over
events, overall and by the number of prior events (0, 1-4, >= 5), because a
stream is mostly young users.

"Frozen at the cutoff" replays the same events but each history stops at the
cutoff (what a daily batch would serve): the difference is what freshness is
worth. A model is anything with ``scores(histories) -> [B, n_items]``
(:class:`Scorer`); a user with no usable history is the model's own business
(the served path falls back to popularity, see :mod:`dreamstream.evaluation.scorers`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Protocol

import numpy as np

from dreamstream.data.metrics import KS, topk_of_scores
from dreamstream.evaluation.events import EventLog

BUCKETS = {"0": (0, 1), "1-4": (1, 5), ">=5": (5, 1 << 62)}  # prior events, [lo, hi)


@dataclass(frozen=True, eq=False)
class Histories:
    """A batch of queries: for each, the indexes into ``log`` of the user's earlier events, in time order."""

    log: EventLog
    rows: list[np.ndarray]
    exclude: list[np.ndarray] | None = None  # per query, item indexes the ranking will mask (the user's watched items)
    queries: np.ndarray | None = None  # per query, the event it predicts (for scorers that count the live past)

    def __len__(self) -> int:
        return len(self.rows)

    def items(self, q: int) -> np.ndarray:
        return self.log.item[self.rows[q]]

    def matrix(self, weights: np.ndarray | None = None) -> np.ndarray:
        """float32 [B, n_items]: per query, the summed ``weights`` (one per log event; 1 if None) of each item."""
        out = np.zeros((len(self.rows), self.log.n_items), np.float32)
        lengths = np.fromiter((r.size for r in self.rows), np.int64, len(self.rows))
        if lengths.sum():
            flat = np.concatenate(self.rows)
            w = np.ones(flat.size, np.float32) if weights is None else weights[flat]
            np.add.at(out, (np.repeat(np.arange(len(self.rows)), lengths), self.log.item[flat]), w)
        return out


class Scorer(Protocol):
    def scores(self, histories: Histories) -> np.ndarray: ...


@dataclass(frozen=True)
class PrequentialResult:
    """Per streamed event: the target's rank (``max(KS)`` when outside the top-k) and the number of prior events."""

    rank: np.ndarray
    prior: np.ndarray

    def metrics(self, rows: np.ndarray | None = None, ks=KS) -> dict[str, float]:
        rank = self.rank if rows is None else self.rank[rows]
        out: dict[str, float] = {"events": int(rank.size)}
        for k in ks:
            within = rank < k
            out[f"hitrate@{k}"] = float(within.mean()) if rank.size else float("nan")
            out[f"ndcg@{k}"] = float(np.where(within, 1.0 / np.log2(rank + 2.0), 0.0).mean()) if rank.size else float("nan")
        return out

    def by_bucket(self) -> dict[str, dict[str, float]]:
        return {name: self.metrics(np.flatnonzero((self.prior >= lo) & (self.prior < hi)))
                for name, (lo, hi) in BUCKETS.items()}

    def report(self) -> dict:
        return {"overall": self.metrics(), "by_prior_events": self.by_bucket()}


@dataclass(frozen=True, eq=False)
class QuerySet:
    """Events to predict (indexes into ``log``), with per query the rows the model sees and the rows masked."""

    log: EventLog
    queries: np.ndarray
    seen: list[np.ndarray]
    masked: list[np.ndarray]

    def __len__(self) -> int:
        return int(self.queries.size)


def stream_queries(log: EventLog, cutoff: int, frozen: bool = False) -> QuerySet:
    """Every event from ``cutoff`` on, each with the user's earlier events as history.

    The masked rows are always the full history (what the user has watched);
    the seen rows stop at the cutoff when ``frozen``.
    """
    order, position, start = log.by_user
    queries = np.arange(cutoff, len(log))
    seen, masked = [], []
    for e in queries:
        u = log.user[e]
        rows = order[start[u]:start[u] + position[e]]
        masked.append(rows)
        seen.append(rows[rows < cutoff] if frozen else rows)
    return QuerySet(log, queries, seen, masked)


def evaluate_queries(qs: QuerySet, scorer: Scorer, batch: int = 1024,
                     progress: Callable[[int], None] | None = None) -> PrequentialResult:
    """Rank each query's target against the full catalogue, its masked items excluded."""
    log, k_max = qs.log, max(KS)
    rank = np.full(len(qs), k_max, np.int64)
    for lo in range(0, len(qs), batch):
        hi = min(lo + batch, len(qs))
        exclude = [np.unique(log.item[r]) for r in qs.masked[lo:hi]]
        scores = np.array(scorer.scores(Histories(log, qs.seen[lo:hi], exclude, qs.queries[lo:hi])), dtype=np.float32,
                          copy=True)
        top = topk_of_scores(scores, exclude, k_max)
        hit = top == log.item[qs.queries[lo:hi], None]
        rank[lo:hi] = np.where(hit.any(axis=1), hit.argmax(axis=1), k_max)
        if progress:
            progress(hi - lo)
    return PrequentialResult(rank, np.array([r.size for r in qs.masked], np.int64))


def evaluate_stream(log: EventLog, cutoff: int, scorer: Scorer, frozen: bool = False, batch: int = 1024,
                    progress: Callable[[int], None] | None = None) -> PrequentialResult:
    """Rank every event from ``cutoff`` on with ``scorer``; see the module docstring for the protocol."""
    return evaluate_queries(stream_queries(log, cutoff, frozen), scorer, batch, progress)


def summarize(results: Mapping[str, list[PrequentialResult]], column: str = "hitrate@20") -> dict[str, dict]:
    """Mean and std over seeds of every metric, overall and by bucket, per model."""
    out: dict[str, dict] = {}
    for name, runs in results.items():
        reports = [r.report() for r in runs]
        out[name] = {"overall": _mean_std([r["overall"] for r in reports]),
                     "by_prior_events": {b: _mean_std([r["by_prior_events"][b] for r in reports]) for b in BUCKETS}}
    return out


def _mean_std(rows: list[dict[str, float]]) -> dict[str, dict[str, float] | int]:
    keys = [k for k in rows[0] if k != "events"]
    out: dict = {"events": rows[0]["events"], "seeds": len(rows)}
    for k in keys:
        values = np.array([r[k] for r in rows], np.float64)
        out[k] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
    return out
