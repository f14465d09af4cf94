"""One evaluation run: every model and baseline under each protocol, over seeds, into one report.

The rows, and why each is there:

* ``popularity``, ``item-knn``, ``ease`` — the baselines a practitioner tries
  first, tuned on validation (:mod:`dreamstream.evaluation.baselines`);
* ``item-knn (decayed)``, ``ease (decayed)`` — the same models scoring a
  history decayed as the worker decays its user vector, the half-life
  chosen on validation with their other hyperparameters: the served row's
  recency, given to an item-to-item method;
* ``sasrec`` — a sequential model (:mod:`dreamstream.evaluation.sasrec`),
  scored under the same group rule as every row;
* ``lightgcn (BPR vectors, served readout)`` — LightGCN's item vectors
  BPR-trained with their own tuned hyperparameters, read out as the worker
  reads DREAM's (the decayed DreamUMM user vector; :mod:`models.lightgcn_fit`);
* ``dream`` — the user vector the worker streams (DreamUMM readout over DREAM's
  item space), with the half-life chosen on validation;
* ``dream -<part>`` — ablations: one mechanism of DREAM switched off;
* ``dream + candidates (k=...)`` — Candidate-DreamUMM's cold-start blend
  (:class:`dreamstream.evaluation.scorers.CandidateBlendScorer`);
* ``served`` / ``opal-*`` — OPAL's interests, merged as ``dreamstream.client``
  merges them (:mod:`dreamstream.evaluation.opal_scorers`);
* ``... (frozen)`` — the same model with every history stopped at the cutoff:
  what a daily batch would serve (prequential only);
* the ``cold-item`` block — new videos: the item tower's vectors for items
  no model trained on, against content baselines and the trained vectors,
  and the same stream's other events with the new videos retrievable or
  not, over one item space (:mod:`dreamstream.evaluation.cold_items`); in
  both, the served row: the new films' tower vectors refined by their live
  watchers (:mod:`dreamstream.evaluation.live_refinement`), the reference
  of both blocks.

Deterministic rows are computed once; seeded rows once per seed, and the
report gives mean and standard deviation over seeds, and for every row its
difference in HitRate@20 against the served row with a paired bootstrap
interval over users (:mod:`dreamstream.evaluation.bootstrap`). Seeded work is cut into
:class:`Job` s (a seed's DREAM and OPAL, a seed's SASRec and LightGCN, one
ablation, one candidate half-life) that run in parallel processes, one
thread each: on 2 cores that is what keeps the whole table within minutes.
The decay half-life is chosen first (one DREAM per candidate, on the
prequential validation queries) and then used by every served row of both
protocols.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from dreamstream.data.recbole import Dataset
from dreamstream.engagement import Engagement, dataset_weights
from dreamstream.evaluation.baselines import DECAY_GRID, EASE_GRID, KNN_GRID, Popularity, ease, item_knn, tune
from dreamstream.evaluation.bootstrap import hits, paired_interval
from dreamstream.evaluation import cold_items as cold
from dreamstream.evaluation.events import EventLog
from dreamstream.evaluation.prequential import PrequentialResult, evaluate_queries, summarize
from dreamstream.evaluation.live_refinement import LIVE_ROW
from dreamstream.evaluation.protocols import Protocol, leave_last_out, prequential
from dreamstream.evaluation.scorers import CandidateBlendScorer, DreamUMMScorer

USER_SHARES = (0.3, 0.5, 0.7, 0.9)  # the user vector's share of the client's slots, chosen on validation
# OPAL's own decay, separate from the user vector's: the interests keep long-term tastes next to the 120-s
# session vector and re-rank it (score blend). Chosen on validation only (ml-100k-dev prequential, 3 seeds,
# K=2: HitRate@20 +0.0029, 0.3707 vs 0.3678); the client's quota merge lost at every OPAL half-life
# (120 s ... inf: -0.002 ... -0.010), so the blend is the row to serve.
OPAL_HALF_LIFE_S = math.inf  # the worker's default (DREAMSTREAM_OPAL_HALF_LIFE_S)
COLD_MIN_POSITIVE = (2, 5)  # Candidate-DreamUMM thresholds measured (the worker's default is 5)
ABLATIONS = {"-modal line": {"use_modal": False}, "-filter gate": {"use_filter_gate": False},
             "-item graph": {"use_item_graph": False}, "-S3": {"use_s3": False},
             "-BMA": {"use_intra": False, "use_inter": False}, "-decay": {}}


@dataclass(frozen=True)
class EvalConfig:
    seeds: tuple[int, ...] = (0, 1, 2)
    cutoff: float = 0.8                 # prequential cutoff: share of events before it
    valid_fraction: float = 0.125       # latest share of the past that validates
    protocols: tuple[str, ...] = ("prequential", "leave-last-out")
    ablations: bool = False             # six more DREAM fits (first seed): opt-in (`evaluate --ablations`)
    baselines: bool = True              # SASRec and LightGCN (popularity, item-kNN and EASE always run)
    opal: bool = True
    progress: bool = False             # per-epoch bars: off by default, jobs run in parallel processes
    workers: int = 0                   # processes for the seeded jobs (0: one per core)
    half_lives: tuple[float, ...] = (120.0,)  # decays to choose from on validation (one: no choice, just used)
    strict: bool = True                # rank each event from the state before its same-timestamp group
    final: bool = False                # score the test window (else the validation window: development)
    cold_items: bool = True            # the cold-item protocol (with prequential)


Rows = list[tuple[str, PrequentialResult, float]]  # (row name, test result, seconds it took)


@dataclass
class ProtocolRun:
    protocol: Protocol
    results: dict[str, list[PrequentialResult]] = field(default_factory=dict)
    chosen: dict[str, object] = field(default_factory=dict)   # hyperparameters chosen on validation, per row
    spreads: list[np.ndarray] = field(default_factory=list)   # per seed, each test query's history spread
    seconds: dict[str, float] = field(default_factory=dict)   # compute time per row, summed over seeds

    def add(self, rows: Rows) -> None:
        for name, result, seconds in rows:
            self.results.setdefault(name, []).append(result)
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def report(self) -> dict:
        test = self.protocol.test
        return {"describe": self.protocol.describe, "rows": summarize(dict(sorted(self.results.items(), key=_row_order))),
                "vs_served": intervals(self.results, test.log.user[test.queries]),
                "opal_by_spread": opal_by_spread(self.results, self.spreads, test.log.user[test.queries]),
                "chosen": self.chosen, "seconds": {k: round(v, 1) for k, v in self.seconds.items()}}


ROW_ORDER = ("popularity", "item-knn", "ease", "sasrec", "lightgcn", "dream", "opal", "served")
SERVED = "served: dream + opal"  # the row every other is compared with (``dream`` when OPAL is off)
LIGHTGCN = "lightgcn (BPR vectors, served readout)"


def reference_row(results: dict) -> str | None:
    """The served row of a run: what a ranking service gets (OPAL's blend), else the streamed user vector.

    In the cold-item blocks: the new films' served vectors (the tower, refined by live watchers), else the tower's.
    """
    return next((name for name in (SERVED, "dream", LIVE_ROW, cold.TOWER_ROW) if name in results), None)


def history_spread(items: np.ndarray, qs) -> np.ndarray:
    """Per query, how spread its history is in the item space: ``1 - |mean of the unit item vectors|`` (nan: empty).

    0 for a history of one direction (one taste); towards 1 for items
    pointing every way (several tastes) - where several interests should help.
    """
    out = np.full(len(qs), np.nan)
    for q, rows in enumerate(qs.seen):
        if rows.size:
            out[q] = 1.0 - float(np.linalg.norm(items[qs.log.item[rows]].mean(axis=0)))
    return out


def opal_by_spread(results: dict[str, list[PrequentialResult]], spreads: list[np.ndarray], users: np.ndarray
                   ) -> dict[str, dict]:
    """OPAL's paired gain (served minus the user vector alone) by tercile of history spread, with intervals."""
    if not spreads or SERVED not in results or "dream" not in results:
        return {}
    spread = np.nanmean(np.stack(spreads), axis=0)
    gain = hits([r.rank for r in results[SERVED]]) - hits([r.rank for r in results["dream"]])
    known = ~np.isnan(spread)
    edges = np.quantile(spread[known], [1 / 3, 2 / 3])
    band = np.digitize(spread, edges)
    out = {}
    for b, name in enumerate(("narrow", "middle", "wide")):
        rows = np.flatnonzero(known & (band == b))
        if rows.size:
            out[name] = {"events": int(rows.size), "spread": [float(spread[rows].min()), float(spread[rows].max())],
                         **paired_interval(gain[rows], users[rows]).to_dict()}
    return out


def intervals(results: dict[str, list[PrequentialResult]], users: np.ndarray) -> dict[str, dict]:
    """Per row, its HitRate@20 difference against the served row with a paired bootstrap interval over users."""
    ref = reference_row(results)
    if ref is None:
        return {}
    base = hits([r.rank for r in results[ref]])
    return {name: {"vs": ref, **paired_interval(hits([r.rank for r in runs]) - base, users).to_dict()}
            for name, runs in results.items() if name != ref and runs[0].rank.size == base.size}


def _row_order(item: tuple[str, list]) -> tuple[int, str]:
    name = item[0]
    rank = next((i for i, prefix in enumerate(ROW_ORDER) if name.startswith(prefix)), len(ROW_ORDER))
    return rank, name


@dataclass(frozen=True)
class Source:
    """What a job process needs to rebuild the protocols: the dataset and the evaluation settings."""

    ds: Dataset
    engagement: Engagement | None
    config: EvalConfig

    def protocol(self, name: str) -> Protocol:
        # what a protocol depends on, not id(ds): an id can be reused, and a cutoff may change between runs
        c = self.config
        key = (str(self.ds.path), self.ds.name, self.ds.n_interactions, name, c.cutoff, c.valid_fraction,
               self.engagement, c.strict, c.final)
        if key not in _PROTOCOLS:
            weights = dataset_weights(self.ds, self.engagement)
            if name == "prequential":
                log = EventLog.from_dataset(self.ds, weights)
                _PROTOCOLS[key] = prequential(log, log.cut_at_fraction(c.cutoff), c.valid_fraction, c.strict, c.final)
            elif name in ("cold-item", cold.WARM_BLOCK):
                _PROTOCOLS[key] = self._cold_protocol(EventLog.from_dataset(self.ds, weights), name)
            else:
                _PROTOCOLS[key] = leave_last_out(self.ds, weights, strict=c.strict, final=c.final)
        return _PROTOCOLS[key]

    def _cold_protocol(self, log: EventLog, name: str = "cold-item") -> Protocol:
        """Prequential without the cold items' past; scored: the streamed events targeting them.

        In development (not ``final``) the same, inside the training past: the
        cold items lose their events before the validation window, which is scored.
        ``cold.WARM_BLOCK``: the same stream's other events (targets not cold).
        """
        from dataclasses import replace

        c = self.config
        cutoff = log.cut_at_fraction(c.cutoff)
        if not c.final:
            log = log.head(cutoff)
            cutoff = log.cut_at_fraction(1.0 - c.valid_fraction)
        items = cold.cold_items(log.n_items)
        kept, cut = cold.without_cold_past(log, items, cutoff)
        base = prequential(kept, cut, c.valid_fraction, c.strict, final=True)
        scored = items if name == "cold-item" else np.setdiff1d(np.arange(log.n_items), items)
        test = cold.targeting(base.test, scored)
        describe = {**base.describe, "protocol": name, "window": "test" if c.final else "validation (development)",
                    "cold_items": int(items.size), "cold_share": cold.COLD_SHARE, "cold_seed": cold.COLD_SEED,
                    "scored_events": len(test), "scored_users": int(np.unique(kept.user[test.queries]).size)}
        for k in ("scored_users_new", "tied_share"):
            describe.pop(k, None)
        return replace(base, name=name, test=test, frozen=None, describe=describe)

    @property
    def features(self) -> dict:
        return {"text": self.ds.text_feat, "visual": self.ds.image_feat}


_PROTOCOLS: dict = {}  # per process: protocols already built from a Source


@dataclass(frozen=True)
class Job:
    """One unit of seeded work, run in a worker process."""

    protocol: str
    kind: str                  # "half-life" | "dream" | "baselines" | "ablation"
    seed: int
    half_life: float = math.inf
    label: str = ""            # the ablation's label


@dataclass
class JobResult:
    job: Job
    rows: Rows
    chosen: dict
    lines: list[str]
    other: dict[str, Rows] = field(default_factory=dict)  # rows of another protocol's block (cold-item upper bound)


def evaluate_dataset(ds: Dataset, config: EvalConfig = EvalConfig(), engagement: Engagement | None = None,
                     echo: Callable[[str], None] = print) -> dict:
    """The whole report: per protocol, every row's metrics (mean and std over seeds), choices and times."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from tqdm.auto import tqdm

    started = time.perf_counter()
    source = Source(ds, engagement, config)
    names = list(config.protocols) + (["cold-item", cold.WARM_BLOCK] if config.cold_items
                                      and "prequential" in config.protocols else [])
    runs = {name: ProtocolRun(source.protocol(name)) for name in names}
    report: dict = {"data": {"name": ds.name, "path": str(ds.path), "events": int(ds.n_interactions),
                             "users": ds.n_users, "items": ds.n_items}, "seeds": list(config.seeds), "protocols": {}}
    workers = config.workers or os.cpu_count() or 1
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_one_thread) as pool:
        half_life, tried = config.half_lives[0], {}
        if len(config.half_lives) > 1:
            first = config.protocols[0]
            echo(f"choosing the decay half-life on {first} validation: {len(config.half_lives)} DREAM fits")
            tried = {r.job.half_life: r.chosen["valid"]
                     for r in pool.map(run_job, [source] * len(config.half_lives),
                                       [Job(first, "half-life", config.seeds[0], hl) for hl in config.half_lives])}
            half_life = max(config.half_lives, key=lambda hl: (round(tried[hl], 4), hl))
            echo(f"  half-life {half_life} s; validation HitRate@20 by half-life {tried}")
        jobs = plan_jobs(config, half_life)
        futures = [pool.submit(run_job, source, job) for job in jobs]
        for name, run in runs.items():  # the deterministic rows, in this process while the jobs run
            echo(f"{name}: {run.protocol.describe}")
            run.chosen["dream"] = {"half_life_s": half_life, "valid_by_half_life": {str(k): v for k, v in tried.items()}}
            run_deterministic(run, echo, source, half_life)
        for future in tqdm(as_completed(futures), total=len(futures), desc="evaluation jobs", unit="job",
                           dynamic_ncols=True):
            result = future.result()
            runs[result.job.protocol].add(result.rows)
            for other, rows in result.other.items():
                runs[other].add(rows)
            if "spread" in result.chosen:
                runs[result.job.protocol].spreads.append(np.asarray(result.chosen.pop("spread")))
            for key, value in result.chosen.items():
                runs[result.job.protocol].chosen.setdefault(key, value)
            for line in result.lines:
                echo(f"  {result.job.protocol} seed {result.job.seed}: {line}")
    for name, run in runs.items():
        report["protocols"][name] = run.report()
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _one_thread() -> None:
    """Job processes use one thread each: on a small machine, processes in parallel beat threads in one."""
    import torch

    torch.set_num_threads(1)


def plan_jobs(config: EvalConfig, half_life: float) -> list[Job]:
    """Every seeded job, longest first (so the pool ends together)."""
    jobs = []
    for name in config.protocols:
        for seed in config.seeds:
            if config.baselines:
                jobs.append(Job(name, "baselines", seed, half_life))
            jobs.append(Job(name, "dream", seed, half_life))
    if config.cold_items and "prequential" in config.protocols:
        jobs += [Job("cold-item", "cold", seed, half_life) for seed in config.seeds]
    if config.ablations:
        jobs += [Job(config.protocols[0], "ablation", config.seeds[0], half_life, label) for label in ABLATIONS]
    return jobs


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _scored(protocol: Protocol, name: str, scorer, seconds: float = 0.0, frozen: bool = True) -> Rows:
    rows = [(name, evaluate_queries(protocol.test, scorer), seconds)]
    if frozen and protocol.frozen is not None:
        rows.append((f"{name} (frozen)", evaluate_queries(protocol.frozen, scorer), 0.0))
    return rows


def run_deterministic(run: ProtocolRun, echo: Callable[[str], None], source: Source, half_life: float) -> None:
    """Popularity, and item-kNN and EASE tuned on validation, undecayed and with the product's decay.

    The cold-item block: the content baselines instead, decayed with the served half-life.
    """
    protocol = run.protocol
    if protocol.name in ("cold-item", cold.WARM_BLOCK):
        if protocol.name == "cold-item":
            _content_rows(run, source, half_life)
        return
    run.add(_scored(protocol, "popularity", Popularity.fit(protocol.refit_log or protocol.fit_log), frozen=False))
    for name, build, grid in (("item-knn", item_knn, KNN_GRID), ("ease", ease, EASE_GRID)):
        for label, half_lives in ((name, (math.inf,)), (f"{name} (decayed)", DECAY_GRID)):
            tuned, seconds = _timed(lambda: tune(build, grid, protocol.fit_log, protocol.valid, protocol.refit_log,
                                                 half_lives))
            run.chosen[label] = tuned.params
            run.add(_scored(protocol, label, tuned.scorer, seconds, frozen=label == name))
            echo(f"  {label}: {tuned.params} ({seconds:.0f} s)")


def _content_rows(run: ProtocolRun, source: Source, half_life: float) -> None:
    """TF-IDF of the ``.item`` text and popularity within genre: what a content pipeline alone would rank."""
    protocol, ds = run.protocol, source.ds
    popularity = Popularity.fit(protocol.refit_log or protocol.fit_log)
    texts = ds.item_text()
    if texts is not None:
        run.add(_scored(protocol, cold.TFIDF_ROW, cold.TfidfScorer(cold.tfidf(texts), popularity.counts, half_life),
                        frozen=False))
    genre = cold.genres(ds.item_fields)
    if genre is not None:
        run.add(_scored(protocol, cold.GENRE_ROW, cold.GenrePopularity(genre, protocol.test.log, half_life),
                        frozen=False))


def run_job(source: Source, job: Job) -> JobResult:
    """One job in a worker process (top level so the pool can pickle it)."""
    protocol = source.protocol(job.protocol)
    result = JobResult(job, [], {}, [])
    {"half-life": _half_life_job, "dream": _dream_job, "baselines": _baselines_job,
     "ablation": _ablation_job, "cold": _cold_job}[job.kind](source, protocol, job, result)
    return result


def _half_life_job(source: Source, protocol: Protocol, job: Job, out: JobResult) -> None:
    """DREAM trained for one candidate decay (no refit): its served validation HitRate@20."""
    from models.dream import DreamConfig
    from models.dream_fit import fit_on, served_validator
    from models.readout_trainer import ReadoutConfig

    train = ReadoutConfig(seed=job.seed, progress=source.config.progress, half_life_s=job.half_life)
    fitted = fit_on(protocol.fit_log, source.features, DreamConfig(), train,
                    served_validator(protocol.fit_log, protocol.valid, job.half_life))
    out.chosen["valid"] = round(fitted.fit.best_score, 4)


def _dream_job(source: Source, protocol: Protocol, job: Job, out: JobResult) -> None:
    """DREAM served as the worker serves it, Candidate-DreamUMM, and OPAL over the same item space."""
    from models.dream import DreamConfig
    from models.dream_fit import fit_dream
    from models.readout_trainer import ReadoutConfig

    train = ReadoutConfig(seed=job.seed, progress=source.config.progress, half_life_s=job.half_life)
    fitted, seconds = _timed(lambda: fit_dream(protocol, source.features, DreamConfig(), train))
    served = DreamUMMScorer(fitted.items, Popularity.fit(protocol.refit_log or protocol.fit_log), job.half_life)
    out.rows += _scored(protocol, "dream", served, seconds)
    out.lines.append(f"dream best epoch {fitted.fit.best_epoch}, valid {fitted.fit.best_score:.4f} ({seconds:.0f} s)")
    if protocol.frozen is not None:  # new users exist only in a stream
        for k in COLD_MIN_POSITIVE:
            out.rows += _scored(protocol, f"dream + candidates (k={k})", CandidateBlendScorer(served, k), frozen=False)
    if source.config.opal:
        _opal_rows(protocol, fitted.items, job, out)
    if protocol.name == "prequential" and source.config.cold_items:  # the cold items' trained vectors: the upper bound
        cold_protocol = source.protocol("cold-item")
        upper = DreamUMMScorer(fitted.items, Popularity.fit(cold_protocol.refit_log or cold_protocol.fit_log),
                               job.half_life)
        out.other["cold-item"] = _scored(cold_protocol, cold.UPPER_ROW, upper, frozen=False)


def _cold_job(source: Source, protocol: Protocol, job: Job, out: JobResult) -> None:
    """DREAM trained without the cold items' past; the cold items' vectors from the item tower over their features.

    The other events are ranked twice over that one item space: with the
    new videos retrievable, and without (their tower vectors still in the
    users' vectors, as in a service that embeds but does not index them).
    Both blocks also get the live-watchers experiment (:func:`_live_rows`).
    """
    from models.dream import DreamConfig
    from models.dream_fit import fit_dream
    from models.readout_trainer import ReadoutConfig, served_examples

    train = ReadoutConfig(seed=job.seed, progress=source.config.progress, half_life_s=job.half_life)
    fitted, seconds = _timed(lambda: fit_dream(protocol, source.features, DreamConfig(), train))
    new = cold.cold_items(fitted.items.shape[0])
    log = protocol.refit_log or protocol.fit_log
    examples = served_examples(log, fitted.items, job.half_life)  # the tower's distillation and m_user share them
    items = cold.tower_vectors(source.features, fitted.items, new, job.seed, examples)
    popularity = Popularity.fit(log)
    served = DreamUMMScorer(items, popularity, job.half_life)
    out.rows += _scored(protocol, cold.TOWER_ROW, served, seconds, frozen=False)
    others = source.protocol(cold.WARM_BLOCK)  # what the new vectors cost the events they do not target
    out.other[cold.WARM_BLOCK] = [row for name, scorer in cold.other_event_scorers(served, new).items()
                                  for row in _scored(others, name, scorer, frozen=False)]
    live, other_live = _live_rows(protocol, others, items, new, examples[0].numpy(), popularity, job.half_life)
    out.rows += live
    out.other[cold.WARM_BLOCK] += other_live
    out.lines.append(f"cold-item dream best epoch {fitted.fit.best_epoch} ({seconds:.0f} s); "
                     f"live refinement {live[0][2] + other_live[0][2]:.1f} s")


def _live_rows(protocol: Protocol, others: Protocol, items: np.ndarray, new: np.ndarray, served_users: np.ndarray,
               popularity: Popularity, half_life: float) -> tuple[Rows, Rows]:
    """The served row in both cold-item blocks: the new films refined by their live watchers.

    Its seconds are its own (the watchers, the versions and the scoring), so
    the report shows what the live refinement adds to a run.
    """
    from dreamstream.evaluation.live_refinement import live_scorer

    scorer, build = _timed(lambda: live_scorer(items, new, protocol.test, served_users, popularity, half_life))
    cold_result, cold_seconds = _timed(lambda: evaluate_queries(protocol.test, scorer))
    other_result, other_seconds = _timed(lambda: evaluate_queries(others.test, scorer))
    return [(LIVE_ROW, cold_result, build + cold_seconds)], [(LIVE_ROW, other_result, other_seconds)]


def _opal_rows(protocol: Protocol, items: np.ndarray, job: Job, out: JobResult) -> None:
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
    sequences = [seq for seq in (log.item[rows[positive[rows]]] for rows in log.sequences()) if seq.size >= 2]

    def validate(model) -> float:
        scorer = OpalScorer(model, items, popularity, mode="max", half_life_s=job.half_life,
                            opal_half_life_s=OPAL_HALF_LIFE_S)
        return evaluate_queries(protocol.valid, scorer).metrics()["hitrate@20"]

    config = OpalConfig(dim=items.shape[1])
    (model, _), seconds = _timed(lambda: fit_opal(sequences, items, validate, config, seed=job.seed, progress=False))
    quota = {share: OpalScorer(model, items, popularity, mode="quota", user_share=share, half_life_s=job.half_life,
                               opal_half_life_s=OPAL_HALF_LIFE_S) for share in USER_SHARES}
    by_share = {share: evaluate_queries(protocol.valid, scorer).metrics()["hitrate@20"] for share, scorer in quota.items()}
    share = max(USER_SHARES, key=lambda s: (round(by_share[s], 4), -s))
    out.chosen["quota"] = {"user_share": share, "valid_by_user_share": {str(k): round(v, 4) for k, v in by_share.items()}}
    for mode, name in (("max", "opal (best interest)"), ("merge", "opal (weighted merge)")):
        scorer = OpalScorer(model, items, popularity, mode=mode, half_life_s=job.half_life,
                            opal_half_life_s=OPAL_HALF_LIFE_S)
        out.rows += _scored(protocol, name, scorer, seconds if mode == "max" else 0.0, frozen=False)
    out.rows += _scored(protocol, "dream + opal (quota merge, the previous client)", quota[share], frozen=False)
    served = OpalScorer(model, items, popularity, mode="served", half_life_s=job.half_life,
                        opal_half_life_s=OPAL_HALF_LIFE_S)  # dreamstream.blend: what the client serves
    out.rows += _scored(protocol, SERVED, served)
    out.chosen["spread"] = history_spread(items, protocol.test)
    out.lines.append(f"opal K={config.interests} ({seconds:.0f} s); quota merge user_share {share} "
                     f"(validation {by_share})")


def _baselines_job(source: Source, protocol: Protocol, job: Job, out: JobResult) -> None:
    """SASRec (its configuration chosen on validation once, see its module) and LightGCN (tuned on validation)."""
    from dreamstream.evaluation.sasrec import fit_sasrec_on
    from models.lightgcn_fit import fit_lightgcn

    sasrec, seconds = _timed(lambda: fit_sasrec_on(protocol.fit_log, protocol.valid, protocol.refit_log, seed=job.seed))
    out.rows += _scored(protocol, "sasrec", sasrec, seconds)
    out.lines.append(f"sasrec best epoch {sasrec.best_epoch} ({seconds:.0f} s)")
    lightgcn, seconds = _timed(lambda: fit_lightgcn(protocol, seed=job.seed, half_life_s=job.half_life))
    out.chosen[LIGHTGCN] = lightgcn.params
    out.rows += _scored(protocol, LIGHTGCN, lightgcn.scorer, seconds, frozen=False)
    out.lines.append(f"lightgcn {lightgcn.params} ({seconds:.0f} s)")


def _ablation_job(source: Source, protocol: Protocol, job: Job, out: JobResult) -> None:
    """DREAM with one mechanism switched off (``-decay``: trained and served without decay), one seed."""
    from models.dream import DreamConfig
    from models.dream_fit import fit_dream
    from models.readout_trainer import ReadoutConfig

    half_life = math.inf if job.label == "-decay" else job.half_life
    train = ReadoutConfig(seed=job.seed, progress=source.config.progress, half_life_s=half_life)
    fitted, seconds = _timed(lambda: fit_dream(protocol, source.features, DreamConfig(**ABLATIONS[job.label]), train))
    served = DreamUMMScorer(fitted.items, Popularity.fit(protocol.refit_log or protocol.fit_log), half_life)
    out.rows += _scored(protocol, f"dream {job.label}", served, seconds, frozen=False)
    out.lines.append(f"dream {job.label} best epoch {fitted.fit.best_epoch} ({seconds:.0f} s)")
