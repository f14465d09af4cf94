"""One evaluation run: every model and baseline under each protocol, over seeds, into one report.

The rows, and why each is there:

* ``popularity``, ``item-knn``, ``ease`` — the baselines a practitioner tries
  first, tuned on validation (:mod:`dreamstream.evaluation.baselines`);
* ``sasrec`` — a sequential model (:mod:`dreamstream.evaluation.sasrec`);
* ``lightgcn`` — the behaviour line alone, BPR-trained with its own tuned
  hyperparameters, served by the same readout (:mod:`models.lightgcn_fit`);
* ``dream`` — the user vector the worker streams (DreamUMM readout over DREAM's
  item space), with the half-life chosen on validation;
* ``dream -<part>`` — ablations: one mechanism of DREAM switched off;
* ``dream + candidates (k=...)`` — Candidate-DreamUMM's cold-start blend
  (:class:`dreamstream.evaluation.scorers.CandidateBlendScorer`);
* ``served`` / ``opal-*`` — OPAL's interests, merged as ``dreamstream.client``
  merges them (:mod:`dreamstream.evaluation.opal_scorers`);
* ``... (frozen)`` — the same model with every history stopped at the cutoff:
  what a daily batch would serve (prequential only).

Deterministic rows are computed once; seeded rows once per seed, and the
report gives mean and standard deviation over seeds.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from dreamstream.data.recbole import Dataset
from dreamstream.engagement import Engagement, dataset_weights
from dreamstream.evaluation.baselines import EASE_GRID, KNN_GRID, Popularity, ease, item_knn, tune
from dreamstream.evaluation.events import EventLog
from dreamstream.evaluation.prequential import PrequentialResult, evaluate_queries, summarize
from dreamstream.evaluation.protocols import Protocol, leave_last_out, prequential
from dreamstream.evaluation.scorers import CandidateBlendScorer, DreamUMMScorer

DAY_S = 86_400.0
# trained and validated on the first seed; on ml-100k-dev the served vector wants minutes (people rate films in sessions)
HALF_LIVES_S = (math.inf, DAY_S, 600.0, 120.0, 30.0)
COLD_MIN_POSITIVE = (2, 5)  # Candidate-DreamUMM thresholds measured (the worker's default is 5)
ABLATIONS = {"-modal line": {"use_modal": False}, "-filter gate": {"use_filter_gate": False},
             "-item graph": {"use_item_graph": False}, "-S3": {"use_s3": False},
             "-BMA": {"use_intra": False, "use_inter": False}}


@dataclass(frozen=True)
class EvalConfig:
    seeds: tuple[int, ...] = (0, 1, 2)
    cutoff: float = 0.8                 # prequential cutoff: share of events before it
    valid_fraction: float = 0.125       # latest share of the past that validates
    protocols: tuple[str, ...] = ("prequential", "leave-last-out")
    ablations: bool = True
    baselines: bool = True              # SASRec and LightGCN (popularity, item-kNN and EASE always run)
    opal: bool = True
    progress: bool = True


@dataclass
class ProtocolRun:
    protocol: Protocol
    results: dict[str, list[PrequentialResult]] = field(default_factory=dict)
    chosen: dict[str, object] = field(default_factory=dict)   # hyperparameters chosen on validation, per row
    seconds: dict[str, float] = field(default_factory=dict)   # wall time per row, summed over seeds

    def add(self, name: str, result: PrequentialResult, seconds: float = 0.0) -> None:
        self.results.setdefault(name, []).append(result)
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def report(self) -> dict:
        return {"describe": self.protocol.describe, "rows": summarize(self.results), "chosen": self.chosen,
                "seconds": {k: round(v, 1) for k, v in self.seconds.items()}}


def evaluate_dataset(ds: Dataset, config: EvalConfig = EvalConfig(), engagement: Engagement | None = None,
                     echo: Callable[[str], None] = print) -> dict:
    """The whole report: per protocol, every row's metrics (mean and std over seeds), choices and times."""
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))  # the machine is ours while evaluating
    started = time.perf_counter()
    log = EventLog.from_dataset(ds, dataset_weights(ds, engagement))
    features = {"text": ds.text_feat, "visual": ds.image_feat}
    report: dict = {"data": {"name": ds.name, "path": str(ds.path), "events": len(log), "users": ds.n_users,
                             "items": ds.n_items}, "seeds": list(config.seeds), "protocols": {}}
    for name in config.protocols:
        protocol = (prequential(log, log.cut_at_fraction(config.cutoff), config.valid_fraction)
                    if name == "prequential" else leave_last_out(ds, dataset_weights(ds, engagement)))
        echo(f"{name}: {protocol.describe}")
        run = run_protocol(protocol, features, config, echo)
        report["protocols"][name] = run.report()
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_protocol(protocol: Protocol, features: dict, config: EvalConfig, echo: Callable[[str], None]) -> ProtocolRun:
    """Every row of the table for one protocol."""
    from models.dream import DreamConfig
    from models.dream_fit import fit_dream, served_validator
    from models.readout_trainer import ReadoutConfig

    run = ProtocolRun(protocol)
    final_log = protocol.refit_log or protocol.fit_log

    def score(name: str, scorer, seconds: float = 0.0, frozen: bool = True) -> None:
        run.add(name, evaluate_queries(protocol.test, scorer), seconds)
        if frozen and protocol.frozen is not None:
            run.add(f"{name} (frozen)", evaluate_queries(protocol.frozen, scorer))

    score("popularity", Popularity.fit(final_log), frozen=False)
    for name, build, grid in (("item-knn", item_knn, KNN_GRID), ("ease", ease, EASE_GRID)):
        tuned, seconds = _timed(lambda: tune(build, grid, protocol.fit_log, protocol.valid, protocol.refit_log))
        run.chosen[name] = tuned.params
        score(name, tuned.scorer, seconds)
        echo(f"  {name}: {tuned.params} ({seconds:.0f} s)")

    first = ReadoutConfig(seed=config.seeds[0], progress=config.progress)
    (half_life, tried), seconds = _timed(lambda: choose_half_life(protocol, features, first))
    run.chosen["dream"] = {"half_life_s": half_life, "valid_by_half_life": tried, "seconds": round(seconds, 1)}
    echo(f"  dream half-life: {half_life} s; validation HitRate@20 by half-life {tried} ({seconds:.0f} s)")
    for seed in config.seeds:
        train = ReadoutConfig(seed=seed, progress=config.progress, half_life_s=half_life)
        fitted, seconds = _timed(lambda: fit_dream(protocol, features, DreamConfig(), train))
        served = DreamUMMScorer(fitted.items, Popularity.fit(final_log), half_life)
        score("dream", served, seconds)
        echo(f"  dream seed {seed}: best epoch {fitted.fit.best_epoch}, valid {fitted.fit.best_score:.4f} "
             f"({seconds:.0f} s)")
        if protocol.frozen is not None:  # new users exist only in a stream
            for k in COLD_MIN_POSITIVE:
                score(f"dream + candidates (k={k})", CandidateBlendScorer(served, k), frozen=False)
        if config.opal:
            run_opal(run, protocol, fitted.items, half_life, seed, score, echo)
        if config.baselines:
            run_sequential_baselines(run, protocol, seed, half_life, score, echo)
        if config.ablations and seed == config.seeds[0]:
            run_ablations(run, protocol, features, train, score, echo)
    return run


def choose_half_life(protocol: Protocol, features: dict, train) -> tuple[float, dict[str, float]]:
    """Train DREAM for each candidate decay (no refit) and keep the best served validation HitRate@20.

    Ties go to the longer half-life (less decay). The item space is trained
    for the decay it will be served with (:class:`models.readout_trainer.ReadoutConfig`).
    """
    from models.dream import DreamConfig
    from models.dream_fit import fit_on, served_validator

    tried = {}
    for hl in HALF_LIVES_S:
        fitted = fit_on(protocol.fit_log, features, DreamConfig(), replace(train, half_life_s=hl),
                        served_validator(protocol.fit_log, protocol.valid, hl))
        tried[hl] = round(fitted.fit.best_score, 4)
    best = max(HALF_LIVES_S, key=lambda hl: (tried[hl], hl))
    return best, {str(k): v for k, v in tried.items()}


def run_ablations(run: ProtocolRun, protocol: Protocol, features: dict, train, score, echo) -> None:
    """DREAM with one mechanism switched off (and without decay), on one seed: see the table's seeds column."""
    from models.dream import DreamConfig
    from models.dream_fit import fit_dream

    final_log = protocol.refit_log or protocol.fit_log
    variants = {label: (DreamConfig(**switch), train) for label, switch in ABLATIONS.items()}
    variants["-decay"] = (DreamConfig(), replace(train, half_life_s=math.inf))
    for label, (config, variant_train) in variants.items():
        ablated, seconds = _timed(lambda: fit_dream(protocol, features, config, variant_train))
        score(f"dream {label}", DreamUMMScorer(ablated.items, Popularity.fit(final_log), variant_train.half_life_s),
              seconds, frozen=False)
        echo(f"  dream {label}: best epoch {ablated.fit.best_epoch} ({seconds:.0f} s)")


OPAL_INTERESTS = 2      # K: ml-100k-dev prequential validation prefers 2 to 4 (models/opal.py)
OPAL_USER_SHARE = 0.3   # the client's default share of slots for the user vector


def run_opal(run: ProtocolRun, protocol: Protocol, items: np.ndarray, half_life: float, seed: int, score, echo
             ) -> None:
    """OPAL over this seed's item space: its best-interest retrieval, its weighted merge, and what the client serves.

    Trained on the protocol's fit log (two stages, each early-stopped on the
    validation queries by best-interest HitRate@20); scored as the worker
    steps it (decay included) and as :mod:`dreamstream.client` merges it.
    """
    from dreamstream.evaluation.opal_scorers import OpalScorer
    from models.opal import OpalConfig, fit_opal

    popularity = Popularity.fit(protocol.refit_log or protocol.fit_log)
    log = protocol.fit_log
    positive = log.weight > 0
    sequences = [log.item[rows[positive[rows]]] for rows in log.sequences()]
    sequences = [seq for seq in sequences if seq.size >= 2]

    def validate(model) -> float:
        scorer = OpalScorer(model, items, popularity, mode="max", half_life_s=half_life)
        return evaluate_queries(protocol.valid, scorer).metrics()["hitrate@20"]

    config = OpalConfig(dim=items.shape[1], interests=OPAL_INTERESTS)
    (model, info), seconds = _timed(lambda: fit_opal(sequences, items, validate, config, seed=seed, progress=False))
    for mode, name in (("max", "opal (best interest)"), ("merge", "opal (weighted merge)"),
                       ("served", "served: dream + opal (client merge)")):
        score(name, OpalScorer(model, items, popularity, mode=mode, user_share=OPAL_USER_SHARE, half_life_s=half_life),
              seconds if mode == "max" else 0.0, frozen=mode == "served")
    echo(f"  opal seed {seed}: K={OPAL_INTERESTS} ({seconds:.0f} s)")


def run_sequential_baselines(run: ProtocolRun, protocol: Protocol, seed: int, half_life: float, score, echo) -> None:
    """SASRec (its configuration chosen on validation once, see its module) and LightGCN (tuned per seed)."""
    from dreamstream.evaluation.sasrec import fit_sasrec_on
    from models.lightgcn_fit import fit_lightgcn

    sasrec, seconds = _timed(lambda: fit_sasrec_on(protocol.fit_log, protocol.valid, protocol.refit_log, seed=seed))
    score("sasrec", sasrec, seconds)
    echo(f"  sasrec seed {seed}: best epoch {sasrec.best_epoch} ({seconds:.0f} s)")

    lightgcn, seconds = _timed(lambda: fit_lightgcn(protocol, seed=seed, half_life_s=half_life))
    run.chosen.setdefault("lightgcn", lightgcn.params)
    score("lightgcn", lightgcn.scorer, seconds, frozen=False)
    echo(f"  lightgcn seed {seed}: {lightgcn.params} ({seconds:.0f} s)")
