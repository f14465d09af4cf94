"""The baselines a reviewer asks for first: popularity, item-kNN and EASE, as prequential scorers.

Each is fitted on the training past of an :class:`~dreamstream.evaluation.events.EventLog`
and then scores any history, including users born after the cutoff: item-kNN
and EASE are item-item models, so a new user's row is simply their history
(Sarwar et al., WWW 2001; Steck, "Embarrassingly Shallow Autoencoders",
WWW 2019). A query with no history gets the popularity ranking, the same
fallback the served path uses, so the zero-history bucket compares like with like.

Time-aware variants: an item-item model scores a weighted history, and with
the product's decay (:func:`dreamstream.engagement.decay`, each item weighed
by ``0.5 ** (age / half_life)`` of its latest event, age measured to the
user's latest event, as the worker decays its user vector) it gets the same
recency the served row has. The half-life is chosen on validation with the
other hyperparameters; ``inf`` is the undecayed, binary history.

Hyperparameters are chosen by :func:`tune` on a validation cut inside the
training past, never on the events being reported. numpy only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Iterable

import numpy as np

from dreamstream.engagement import decay
from dreamstream.evaluation.events import EventLog
from dreamstream.evaluation.prequential import Histories, QuerySet, Scorer, evaluate_queries

SELECT_ON = "hitrate@20"


def interaction_matrix(log: EventLog) -> np.ndarray:
    """Binary float32 [n_users, n_items]: who interacted with what in ``log``."""
    x = np.zeros((log.n_users, log.n_items), np.float32)
    x[log.user, log.item] = 1.0
    return x


@dataclass
class Popularity:
    """Most-interacted items of the training past, the same list for everyone."""

    counts: np.ndarray  # float32 [n_items]

    @classmethod
    def fit(cls, log: EventLog) -> "Popularity":
        return cls(np.bincount(log.item, minlength=log.n_items).astype(np.float32))

    def scores(self, histories: Histories) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(histories), self.counts.size)).copy()


def decayed_presence(histories: Histories, half_life_s: float) -> np.ndarray:
    """float32 [B, n_items]: per query, each watched item's decay from its latest event to the query's latest event.

    ``inf``: the binary history (1 for every watched item).
    """
    if math.isinf(half_life_s):
        return np.minimum(histories.matrix(), 1.0)
    log = histories.log
    out = np.zeros((len(histories), log.n_items), np.float32)
    for q, rows in enumerate(histories.rows):
        if rows.size:
            np.maximum.at(out[q], log.item[rows], decay((log.ts[rows[-1]] - log.ts[rows]) * 1000.0, half_life_s))
    return out


@dataclass
class ItemItem:
    """Scores = (decayed) history x an item-item matrix; an empty history gets popularity."""

    matrix: np.ndarray
    popularity: Popularity
    half_life_s: float = math.inf

    def __post_init__(self) -> None:
        self.matrix = self.matrix.astype(np.float32, copy=False)

    def scores(self, histories: Histories) -> np.ndarray:
        h = decayed_presence(histories, self.half_life_s)
        out = h @ self.matrix
        empty = h.sum(axis=1) == 0
        out[empty] = self.popularity.counts
        return out


def item_knn(log: EventLog, alpha: float = 0.5, neighbours: int | None = None) -> ItemItem:
    """Asymmetric-cosine item-kNN: ``co(i,j) / (n_i^alpha * n_j^(1-alpha))``, each row's top ``neighbours`` kept.

    ``alpha = 0.5`` is plain cosine (Aiolli, RecSys 2013 for the asymmetric form).
    """
    x = interaction_matrix(log)
    co = x.T @ x
    np.fill_diagonal(co, 0.0)
    n = np.maximum(x.sum(axis=0), 1.0)
    sim = co / (n[:, None] ** alpha * n[None, :] ** (1.0 - alpha))
    if neighbours is not None and neighbours < sim.shape[1]:
        drop = np.argpartition(-sim, neighbours, axis=1)[:, neighbours:]
        np.put_along_axis(sim, drop, 0.0, axis=1)
    return ItemItem(sim, Popularity.fit(log))


def ease(log: EventLog, lam: float = 300.0) -> ItemItem:
    """EASE: ``B = I - P diag(1/diag(P))`` with ``P = (X^T X + lam I)^-1``, zero diagonal (Steck 2019)."""
    x = interaction_matrix(log).astype(np.float64)
    gram = x.T @ x
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    b = p / (-np.diag(p))
    np.fill_diagonal(b, 0.0)
    return ItemItem(b, Popularity.fit(log))


@dataclass
class Tuned:
    """A scorer built with the best grid point, and what each point scored on validation."""

    scorer: Scorer
    params: dict
    grid: list[dict]


def tune(build: Callable[..., Scorer], grid: Iterable[dict], fit_log: EventLog, valid: QuerySet,
         refit_log: EventLog | None = None, half_lives: Iterable[float] = (math.inf,)) -> Tuned:
    """Pick the grid point with the best validation HitRate@20: each point fitted on ``fit_log``, scored on ``valid``.

    Every point is tried with every half-life in ``half_lives`` (the scorer's
    ``half_life_s``; the fit does not depend on it). The winner is refitted on
    ``refit_log`` when given (the whole training past).
    """
    scored = []
    for params in grid:
        fitted = build(fit_log, **params)
        for half_life in half_lives:
            metrics = evaluate_queries(valid, replace(fitted, half_life_s=half_life)).metrics()
            scored.append({"params": {**params, "half_life_s": half_life}, SELECT_ON: metrics[SELECT_ON],
                           "ndcg@20": metrics["ndcg@20"]})
    best = dict(max(scored, key=lambda row: row[SELECT_ON])["params"])
    half_life = best.pop("half_life_s")
    final = build(refit_log if refit_log is not None else fit_log, **best)
    return Tuned(replace(final, half_life_s=half_life), {**best, "half_life_s": half_life}, scored)


KNN_GRID = [{"alpha": a, "neighbours": k} for a in (0.3, 0.5, 0.7) for k in (50, 200, None)]
EASE_GRID = [{"lam": lam} for lam in (30.0, 100.0, 300.0, 1000.0, 3000.0)]
DECAY_GRID = (3600.0, 600.0, 120.0, 30.0)  # half-lives the decayed item-item rows choose from (seconds)
