"""Fitting DREAM under an evaluation protocol: the item space the worker serves, chosen on validation.

Shared by ``dreamstream train`` (the checkpoint that is exported) and
``dreamstream evaluate`` (one fit per seed and protocol), so the evaluated
model is the shipped one. The validation score is the served user vector's
HitRate@20 on the protocol's validation queries
(:class:`dreamstream.evaluation.scorers.DreamUMMScorer`); the best epoch's
weights are kept, then, when the protocol refits, the model is trained afresh
on the whole past for that many epochs: the validation slice is the most
recent past, and the item vectors of the users active in it matter most for
what comes next (the same choice as SASRec's refit, which one level down,
on validation only, scored 0.311 against 0.287 without;
:mod:`dreamstream.evaluation.sasrec`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from dreamstream.evaluation.baselines import Popularity
from dreamstream.evaluation.events import EventLog
from dreamstream.evaluation.prequential import QuerySet, evaluate_queries
from dreamstream.evaluation.protocols import Protocol
from dreamstream.evaluation.scorers import DreamUMMScorer
from models.dream import Dream, DreamConfig
from models.graphs import normalized_adjacency
from models.early_stopping import FitResult
from models.readout_trainer import NextItemExamples, ReadoutConfig, fit_readout, item_vectors

SELECT_ON = "hitrate@20"


@dataclass
class DreamFit:
    model: Dream
    items: np.ndarray      # float32 [I, D] unit rows
    fit: FitResult


def served_validator(fit_log: EventLog, valid: QuerySet, half_life_s: float = float("inf")
                     ) -> Callable[[np.ndarray], float]:
    """``validate(items) -> HitRate@20`` of the served user vector on ``valid``."""
    popularity = Popularity.fit(fit_log)

    def validate(items: np.ndarray) -> float:
        return evaluate_queries(valid, DreamUMMScorer(items, popularity, half_life_s)).metrics()[SELECT_ON]

    return validate


def fit_dream(protocol: Protocol, features: dict[str, np.ndarray | None], config: DreamConfig = DreamConfig(),
              train: ReadoutConfig = ReadoutConfig()) -> DreamFit:
    """Train DREAM on the protocol's fit log, early-stopped on its validation queries, refitted when it says so."""
    validate = served_validator(protocol.fit_log, protocol.valid, train.half_life_s)
    chosen = fit_on(protocol.fit_log, features, config, train, validate)
    if protocol.refit_log is None or chosen.fit.best_epoch == 0:
        return chosen
    final = fit_on(protocol.refit_log, features, config, replace(train, epochs=chosen.fit.best_epoch), None)
    final.fit.history = chosen.fit.history + [{**row, "refit": True} for row in final.fit.history]
    final.fit.best_epoch, final.fit.best_score = chosen.fit.best_epoch, chosen.fit.best_score
    final.fit.seconds += chosen.fit.seconds
    return final


def fit_on(log: EventLog, features: dict[str, np.ndarray | None], config: DreamConfig, train: ReadoutConfig,
           validate: Callable[[np.ndarray], float] | None) -> DreamFit:
    """One training run of DREAM on ``log`` (its behaviour graph and its next-item examples)."""
    torch.manual_seed(train.seed)
    adjacency = normalized_adjacency(log.user, log.item, log.n_users, log.n_items)
    model = Dream(log.n_users, log.n_items, adjacency, features, config)
    result = fit_readout(model, NextItemExamples(log), validate, train, name="dream")
    return DreamFit(model, item_vectors(model), result)
