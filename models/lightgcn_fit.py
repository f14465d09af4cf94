"""The LightGCN baseline under an evaluation protocol: BPR-trained, served through the DreamUMM readout.

LightGCN's own user embeddings exist only for users seen in training; the
product serves every user (most of a stream's are new) from their watched
items, so the baseline's item vectors are read out exactly as DREAM's are
(:class:`dreamstream.evaluation.scorers.DreamUMMScorer`). Its hyperparameters
are its own, chosen on the protocol's validation queries from
:data:`LIGHTGCN_GRID`, not borrowed from DREAM.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from dreamstream.evaluation.baselines import Popularity
from dreamstream.evaluation.events import EventLog
from dreamstream.evaluation.protocols import Protocol
from dreamstream.evaluation.scorers import DreamUMMScorer
from models.dream_fit import served_validator
from models.graphs import normalized_adjacency
from models.lightgcn import LightGCN, LightGCNConfig
from models.early_stopping import FitResult
from models.trainer import TrainConfig, fit_bpr, vectors

# (layers, L2 weight, learning rate): the ranges of the LightGCN paper's search, cut to what fits the time budget
# lr 5e-3 peaked after one epoch on ml-100k-dev (validation 0.233), so slower rates are in the grid too
# (3 layers and L2 1e-3 scored no better on validation, 0.226 and 0.232 against 0.233, and were dropped for time)
LIGHTGCN_GRID = [{"n_layers": 2, "w_reg": 1e-4, "lr": 5e-3}, {"n_layers": 2, "w_reg": 1e-4, "lr": 1e-3}]


@dataclass
class LightGCNFit:
    scorer: DreamUMMScorer
    params: dict
    fit: FitResult
    grid: list[dict]


def _fit(log: EventLog, params: dict, dim: int, config: TrainConfig, validate) -> tuple[LightGCN, FitResult]:
    torch.manual_seed(config.seed)
    adjacency = normalized_adjacency(log.user, log.item, log.n_users, log.n_items)
    model = LightGCN(log.n_users, log.n_items, adjacency,
                     LightGCNConfig(dim=dim, n_layers=params["n_layers"], w_reg=params["w_reg"]))
    positive = log.weight > 0
    result = fit_bpr(model, log.user[positive], log.item[positive], log.n_items, validate,
                     replace(config, lr=params["lr"]))
    return model, result


def fit_lightgcn(protocol: Protocol, seed: int = 0, dim: int = 64, grid: list[dict] | None = None,
                 half_life_s: float = float("inf"), progress: bool = False) -> LightGCNFit:
    """Tune on validation over ``grid``, then refit the winner on the protocol's refit log (when it has one).

    Served with the same decay as DREAM (``half_life_s``), so the two rows differ by the item space alone.
    """
    config = TrainConfig(seed=seed, progress=progress)
    validate = served_validator(protocol.fit_log, protocol.valid, half_life_s)
    tried = []
    for params in grid or LIGHTGCN_GRID:
        model, result = _fit(protocol.fit_log, params, dim, config, validate)
        tried.append((result.best_score, params, model, result))
    best_score, params, model, result = max(tried, key=lambda row: row[0])
    log = protocol.fit_log
    if protocol.refit_log is not None:
        log = protocol.refit_log
        model, _ = _fit(log, params, dim, replace(config, epochs=result.best_epoch), None)
    items = vectors(model)[1]  # unit rows already: LightGCN.embeddings normalises its items
    return LightGCNFit(DreamUMMScorer(items, Popularity.fit(log), half_life_s), params, result,
                       [{"params": p, "valid": s} for s, p, _, _ in tried])
