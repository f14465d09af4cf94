"""`dreamstream evaluate`: every model and baseline on real data, or one trained checkpoint on its held-out tail.

Without ``--checkpoint``: :mod:`dreamstream.evaluation.runner` (prequential,
leave-last-out and cold-item protocols, strict grouping, the validation
window unless ``--final``); see docs/evaluation.md.

With ``--checkpoint``: :func:`evaluate_checkpoint` scores a checkpoint written
by ``dreamstream train --train-until ...`` on the events after its training
cutoff only (prequential, strict), and refuses in one line when the data
holds none: a checkpoint is never scored on events it was trained on.

The multi-query helpers (:func:`single_query`, :func:`multi_query`,
:func:`max_over_queries`) rank users by one or several query vectors; OPAL's
retrieval tests use them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import click
import numpy as np

from dreamstream.cli_options import settings_options
from dreamstream.data.metrics import KS, full_sort_topk, popularity_topk, topk_metrics
from dreamstream.settings import Settings

MAIN_COLUMNS = ("recall@10", "recall@20", "recall@50", "ndcg@20", "hitrate@20")
CHECKPOINT_COLUMNS = ("hitrate@10", "hitrate@20", "ndcg@20", "hitrate@50")
MULTI_SHARE = 0.25     # an interest "has mass" in a history when it holds at least this share of it
TRUE_WINDOW = 20       # recent positive events looked at for the ground-truth multi-interest subset
TopK = dict[int, np.ndarray]  # k -> int64 [U, k]


def single_query(user_vecs: np.ndarray, items: np.ndarray, exclude: Sequence[np.ndarray]) -> TopK:
    top = full_sort_topk(user_vecs, items, exclude, max(KS))
    return {k: top[:, :k] for k in KS}


def multi_query(queries: np.ndarray, weights: np.ndarray, items: np.ndarray, exclude: Sequence[np.ndarray]) -> TopK:
    """Quota-merged top-k of several queries per user: queries [U,Q,D], weights [U,Q] (rows sum to 1)."""
    from dreamstream.merge import merge_by_score

    n_users, n_queries, _ = queries.shape
    k_max = max(KS)
    ids = np.stack([full_sort_topk(queries[:, q], items, exclude, k_max) for q in range(n_queries)], axis=1)  # [U,Q,k]
    scores = np.einsum("uqd,uqkd->uqk", queries, items[np.maximum(ids, 0)])
    out = {k: np.full((n_users, k), -1, np.int64) for k in KS}
    for u in range(n_users):
        lists = [ids[u, q][ids[u, q] >= 0] for q in range(n_queries)]
        for k in KS:
            merged = merge_by_score(lists, [scores[u, q][: len(lists[q])] for q in range(n_queries)], weights[u], k)
            out[k][u, : len(merged)] = [item for item, _ in merged]
    return out


def max_over_queries(queries: np.ndarray, items: np.ndarray, exclude: Sequence[np.ndarray]) -> TopK:
    """Rank items by their best query's score: queries [U,Q,D]."""
    scores = np.einsum("uqd,nd->uqn", queries, items).max(axis=1)
    for u, e in enumerate(exclude):
        scores[u, e] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, : max(KS)]
    top = np.full((scores.shape[0], max(KS)), -1, np.int64)
    top[:, : order.shape[1]] = np.where(np.take_along_axis(scores, order, axis=1) > -np.inf, order, -1)
    return {k: top[:, :k] for k in KS}


def metrics_of(topk: TopK, targets: np.ndarray, rows: np.ndarray | None = None) -> dict[str, float]:
    rows = np.arange(len(targets)) if rows is None else rows
    out: dict[str, float] = {}
    for k in KS:
        out.update(topk_metrics(topk[k][rows], targets[rows], ks=(k,)))
    return out


def multi_interest_rows(counts: np.ndarray, share: float = MULTI_SHARE) -> np.ndarray:
    """Users whose hard assignments put at least ``share`` of their events on two or more interests."""
    total = np.maximum(counts.sum(axis=1, keepdims=True), 1)
    return np.flatnonzero(((counts / total) >= share).sum(axis=1) >= 2)


def evaluate_checkpoint(data_dir: Path, ckpt: Path, engagement=None, half_life_s: float = 120.0,
                        opal_half_life_s: float = float("inf"), echo=print) -> dict:
    """A trained checkpoint on the events after its training cutoff: prequential, strict, as the worker serves it.

    Refuses (one line) when ``data_dir`` has no event after the cutoff the
    checkpoint recorded: those it was trained on are never scored. Rows:
    popularity of the past, DREAM's served readout (the decayed DreamUMM
    user vector over the checkpoint's item space), and, with ``opal.pt``,
    what the client serves (the user vector re-ranked by OPAL's interests).
    """
    from dreamstream.data.recbole import load_dataset
    from dreamstream.engagement import dataset_weights
    from dreamstream.errors import UserError
    from dreamstream.evaluation.baselines import Popularity
    from dreamstream.evaluation.events import EventLog
    from dreamstream.evaluation.groups import STRICT, before_group
    from dreamstream.evaluation.prequential import evaluate_queries, stream_queries
    from dreamstream.evaluation.provenance import held_out_start, iso
    from dreamstream.evaluation.scorers import DreamUMMScorer

    if not (ckpt / "config.json").is_file():
        raise UserError(f"{ckpt} is not a checkpoint (no config.json); point --checkpoint at the --out folder of "
                        "`dreamstream train`")
    config = json.loads((ckpt / "config.json").read_text())
    ds = load_dataset(data_dir, config.get("data", {}).get("name"))
    if ds.n_items != config["data"]["n_items"]:
        raise click.ClickException(f"{data_dir} has {ds.n_items} items but the checkpoint was trained on "
                                   f"{config['data']['n_items']}: evaluate on the data it was trained on")
    cutoff = held_out_start(ds, config, ckpt)
    half_life_s = float(config.get("train", {}).get("half_life_s", half_life_s))
    log = EventLog.from_dataset(ds, dataset_weights(ds, engagement))
    start = log.cut_at_time(cutoff)
    queries = before_group(stream_queries(log, start))
    popularity = Popularity.fit(log.head(start))
    items = np.load(ckpt / "items.npy").astype(np.float32)
    scorers = {"popularity": popularity, "dream (served readout)": DreamUMMScorer(items, popularity, half_life_s)}
    if (ckpt / "opal.pt").exists():
        import torch

        from dreamstream.evaluation.opal_scorers import OpalScorer
        from models.opal import load_opal

        torch.set_num_threads(1)
        scorers["served: dream + opal"] = OpalScorer(load_opal(ckpt), items, popularity, mode="served",
                                                     half_life_s=half_life_s, opal_half_life_s=opal_half_life_s)
    else:
        echo(f"{ckpt / 'opal.pt'} not found: the served OPAL row is left out (train with --opal)")
    echo(f"{ds!r}; scoring the {len(queries)} events from {iso(cutoff)} on (the checkpoint was trained on the "
         f"events before it), {STRICT}")
    results = {name: evaluate_queries(queries, scorer) for name, scorer in scorers.items()}
    return {"data": {"path": str(Path(ds.path).resolve()), "name": ds.name, "items": ds.n_items},
            "scored": {"from": iso(cutoff), "events": len(queries), "users": int(np.unique(log.user[start:]).size),
                       "grouping": STRICT, "half_life_s": half_life_s},
            "metrics": {name: r.metrics() for name, r in results.items()},
            "by_prior_events": {name: r.by_bucket() for name, r in results.items()}}


def format_table(metrics: Mapping[str, Mapping[str, float]], columns: Sequence[str] = MAIN_COLUMNS) -> str:
    width = max([len(n) for n in metrics] + [8])
    lines = [" ".join([f"{'model':<{width}}"] + [f"{c:>10}" for c in columns])]
    for name, row in metrics.items():
        lines.append(" ".join([f"{name:<{width}}"] + [f"{row.get(c, float('nan')):>10.4f}" for c in columns]))
    return "\n".join(lines)


def write_plots(ckpt: Path, folder: Path) -> list[Path]:
    """Training curves (history.json) and the item map coloured by OPAL hyper-category."""
    from dreamstream import plots

    written = []
    if (ckpt / "history.json").exists():
        written.append(plots.training_curves(json.loads((ckpt / "history.json").read_text()),
                                             folder / "training_curves.png"))
    if (ckpt / "opal.pt").exists():
        from models.opal import load_opal

        items = np.load(ckpt / "items.npy")
        cats = load_opal(ckpt).categories().detach().numpy()
        written.append(plots.item_map(items, (items @ cats.T).argmax(axis=1), folder / "item_map_opal.png",
                                      centres=cats))
    return written


@click.command("evaluate")
@settings_options("data_dir", "skip_ratio", "skip_weight", "replay_cap", "half_life_s", "opal_half_life_s")
@click.option("--data", type=click.Path(path_type=Path, file_okay=False, exists=True), default=None,
              envvar="DREAMSTREAM_EVALUATE_DATA",
              help="Dataset folder (default: --data-dir). [env DREAMSTREAM_EVALUATE_DATA]")
@click.option("--checkpoint", type=click.Path(path_type=Path, file_okay=False, exists=True), default=None,
              envvar="DREAMSTREAM_EVALUATE_CHECKPOINT",
              help="Score this already-trained checkpoint on the events after its training cutoff (train it with "
                   "--train-until); refuses to score events it was trained on. [env DREAMSTREAM_EVALUATE_CHECKPOINT]")
@click.option("--protocol", "protocols", type=click.Choice(["prequential", "leave-last-out"]), multiple=True,
              default=("prequential", "leave-last-out"), show_default=True, envvar="DREAMSTREAM_EVALUATE_PROTOCOL",
              help="Protocols to run (repeatable). [env DREAMSTREAM_EVALUATE_PROTOCOL]")
@click.option("--cutoff", type=click.FloatRange(0.05, 0.95), default=0.8, show_default=True,
              envvar="DREAMSTREAM_EVALUATE_CUTOFF",
              help="Prequential cutoff: the share of events (in time) that train; the rest stream in as the test. "
                   "[env DREAMSTREAM_EVALUATE_CUTOFF]")
@click.option("--valid-fraction", type=click.FloatRange(0.01, 0.5), default=0.125, show_default=True,
              envvar="DREAMSTREAM_EVALUATE_VALID_FRACTION",
              help="Latest share of the training past that validates (chooses epochs and hyperparameters). "
                   "[env DREAMSTREAM_EVALUATE_VALID_FRACTION]")
@click.option("--seeds", type=click.IntRange(1, 20), default=3, show_default=True, envvar="DREAMSTREAM_EVALUATE_SEEDS",
              help="Seeds per seeded model (the table gives mean ± std). [env DREAMSTREAM_EVALUATE_SEEDS]")
@click.option("--ablations/--no-ablations", default=False, show_default=True, envvar="DREAMSTREAM_EVALUATE_ABLATIONS",
              help="Also train DREAM with each mechanism switched off (six more DREAM fits, first seed; off by default "
                   "to keep the default run within 25 min on 2 cores, see docs/evaluation.md). "
                   "[env DREAMSTREAM_EVALUATE_ABLATIONS]")
@click.option("--baselines/--no-baselines", default=True, show_default=True, envvar="DREAMSTREAM_EVALUATE_BASELINES",
              help="Also train SASRec and LightGCN (popularity, item-kNN and EASE always run). "
                   "[env DREAMSTREAM_EVALUATE_BASELINES]")
@click.option("--opal/--no-opal", default=True, show_default=True, envvar="DREAMSTREAM_EVALUATE_OPAL",
              help="Also train OPAL and score the served merge. [env DREAMSTREAM_EVALUATE_OPAL]")
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              envvar="DREAMSTREAM_EVALUATE_JSON", help="Also write the report as JSON here. [env DREAMSTREAM_EVALUATE_JSON]")
@click.option("--plots", "plots_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              envvar="DREAMSTREAM_EVALUATE_PLOTS",
              help="Write PNG plots here. [env DREAMSTREAM_EVALUATE_PLOTS]")
@click.option("--choose-half-life", "half_lives", type=float, multiple=True, envvar="DREAMSTREAM_EVALUATE_HALF_LIVES",
              help="Candidate decay half-lives in seconds (repeatable): DREAM is trained for each and the best on "
                   "validation is used; 'inf' is no decay. Default: just --half-life-s, as the worker uses it. "
                   "[env DREAMSTREAM_EVALUATE_HALF_LIVES]")
@click.option("--cold-items/--no-cold-items", default=True, show_default=True, envvar="DREAMSTREAM_EVALUATE_COLD_ITEMS",
              help="Also run the cold-item protocol (with prequential): a seeded 10% of items lose their past, their "
                   "vectors come from the item tower. [env DREAMSTREAM_EVALUATE_COLD_ITEMS]")
@click.option("--lenient", is_flag=True, default=False, envvar="DREAMSTREAM_EVALUATE_LENIENT",
              help="LENIENT protocol, for comparison with published numbers only: events of one user in the same "
                   "second are ordered by file row and each is ranked from the ones before it. Default: strict "
                   "(each event ranked from the state before its same-timestamp group). "
                   "[env DREAMSTREAM_EVALUATE_LENIENT]")
@click.option("--final", is_flag=True, default=False, envvar="DREAMSTREAM_EVALUATE_FINAL",
              help="Score the TEST window (once per release; the report records the commit scored). Default: the "
                   "validation window, where every choice is made. [env DREAMSTREAM_EVALUATE_FINAL]")
@click.option("--progress/--no-progress", default=False, show_default=True, envvar="DREAMSTREAM_EVALUATE_PROGRESS",
              help="Per-epoch bars of every job (they run in parallel, so the bars interleave). "
                   "[env DREAMSTREAM_EVALUATE_PROGRESS]")
def evaluate(settings: Settings, data: Path | None, checkpoint: Path | None, protocols: tuple[str, ...], cutoff: float,
             valid_fraction: float, seeds: int, ablations: bool, baselines: bool, opal: bool, json_path: Path | None,
             plots_dir: Path | None, half_lives: tuple[float, ...], cold_items: bool, lenient: bool,
             final: bool, progress: bool) -> None:
    """Every model next to the baselines on real data: prequential (streaming) and leave-last-out, over seeds.

    Without --checkpoint it trains everything itself for each protocol and
    seed (DREAM, OPAL, SASRec, LightGCN, the tuned item-kNN and EASE) and
    prints one table per protocol; see docs/evaluation.md for the protocols.
    """
    data_dir = data or settings.data_dir
    if checkpoint is not None:
        report = evaluate_checkpoint(data_dir, checkpoint, settings.engagement, settings.half_life_s,
                                     settings.opal_half_life_s, echo=click.echo)
        click.echo(format_table(report["metrics"], CHECKPOINT_COLUMNS))
    else:
        report = _evaluate_protocols(data_dir, settings, protocols, cutoff, valid_fraction, seeds, ablations,
                                     baselines, opal, half_lives or (settings.half_life_s,), progress,
                                     strict=not lenient, final=final, cold_items=cold_items)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=1))
        click.echo(f"\nreport written to {json_path}")
    if plots_dir:
        written = write_plots(checkpoint, plots_dir) if checkpoint is not None else write_report_plots(report, plots_dir)
        for path in written:
            click.echo(f"plot written to {path}")


def _evaluate_protocols(data_dir: Path, settings: Settings, protocols, cutoff, valid_fraction, seeds, ablations,
                        baselines, opal, half_lives, progress, strict: bool = True, final: bool = False,
                        cold_items: bool = True) -> dict:
    from dreamstream.commands.train import ensure_text_features
    from dreamstream.data.recbole import DatasetError, load_dataset
    from dreamstream.evaluation.runner import EvalConfig, evaluate_dataset
    from dreamstream.evaluation.table import format_report

    try:
        ds = ensure_text_features(load_dataset(data_dir), click.echo)
    except DatasetError as err:
        raise click.ClickException(str(err)) from None
    config = EvalConfig(seeds=tuple(range(seeds)), cutoff=cutoff, valid_fraction=valid_fraction,
                        protocols=tuple(dict.fromkeys(protocols)), ablations=ablations, baselines=baselines, opal=opal,
                        half_lives=tuple(half_lives), progress=progress, strict=strict, final=final,
                        cold_items=cold_items)
    report = evaluate_dataset(ds, config, settings.engagement, echo=click.echo)
    if final:
        from dreamstream.evaluation.provenance import commit_record

        report["final"] = commit_record()
    click.echo("\n" + format_report(report))
    return report


def write_report_plots(report: dict, folder: Path) -> list[Path]:
    """HitRate@20 per model and protocol with its spread over seeds, and by number of prior events."""
    from dreamstream import plots

    return [plots.protocol_bars(name, block, folder / f"hitrate20_{name}.png")
            for name, block in report["protocols"].items()]
