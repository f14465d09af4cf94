"""Write a versioned model bundle atomically: ONNX files, item vectors, m_user, manifest with checksums.

The bundle is built in a hidden temp folder beside its final place and
renamed into ``<model_dir>/<version>`` only when complete, so a reader
(:func:`dreamstream.bundle.latest_version`) never sees a half-written one.
The manifest is written last and lists the sha256 of every other file.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from dreamstream.bundle import ITEM_IDS, ITEMS, MANIFEST, MEAN_USER, OPSET, sha256, verify_bundle
from export.onnx_export import export_all
from export.opal_step_graph import OpalStepGraph
from models.dreamumm import DreamUMMStep
from models.opal import Opal


def new_version(model_dir: Path, now: datetime | None = None) -> str:
    """``vYYYYMMDD-HHMMSS`` (UTC), with ``-2``, ``-3``… when that second is taken."""
    base = (now or datetime.now(timezone.utc)).strftime("v%Y%m%d-%H%M%S")
    version, n = base, 1
    while (model_dir / version).exists():
        n += 1
        version = f"{base}-{n}"
    return version


def write_bundle(model_dir: str | Path, opal: Opal, item_tower: nn.Module, items: np.ndarray,
                 item_ids: Sequence[Any], text_dim: int, visual_dim: int, data: Mapping[str, Any] | None = None,
                 metrics: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None,
                 version: str | None = None, mean_user: np.ndarray | None = None) -> Path:
    """Export, validate and publish a bundle; returns the path of its ``manifest.json``.

    ``items`` [N, D] are the trained catalogue's vectors (rows are
    normalised here), ``item_ids`` their ids in the same order. ``data`` and
    ``metrics`` describe the training data and offline results for the
    manifest. ``mean_user`` [D] is ``m_user`` (normalised here), written as
    ``mean_user.npy`` when given; without it the bundle has none. Raises
    when any ONNX file differs from PyTorch beyond the contract's
    tolerance, leaving nothing behind.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    cfg = opal.config
    items = np.asarray(items, dtype=np.float32)
    if items.ndim != 2 or items.shape[1] != cfg.dim:
        raise ValueError(f"items must be [N, {cfg.dim}] to match OPAL's dim, got {items.shape}")
    ids = [str(i) for i in item_ids]
    if len(ids) != items.shape[0] or len(set(ids)) != len(ids):
        raise ValueError(f"item_ids must be {items.shape[0]} distinct ids, got {len(ids)} ({len(set(ids))} distinct)")
    m_user = None if mean_user is None else _unit_mean_user(mean_user, cfg.dim)
    sizes = {"D": cfg.dim, "K": cfg.interests, "H": cfg.hidden, "Dt": int(text_dim), "Dv": int(visual_dim), "1": 1}
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=model_dir))
    try:
        errors = export_all({"dreamumm_step": DreamUMMStep(), "opal_step": opal, "item_tower": item_tower}, sizes, tmp,
                            graphs={"opal_step": OpalStepGraph(opal)})
        norms = np.linalg.norm(items, axis=1, keepdims=True)
        np.save(tmp / ITEMS, (items / np.maximum(norms, 1e-12)).astype(np.float32))
        (tmp / ITEM_IDS).write_text(json.dumps(ids))
        if m_user is not None:
            np.save(tmp / MEAN_USER, m_user)
        version = version or new_version(model_dir)
        manifest = {
            "version": version,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "dim": cfg.dim, "interests": cfg.interests, "hidden": cfg.hidden, "tau": cfg.tau,
            "opset": OPSET, "text_dim": int(text_dim), "visual_dim": int(visual_dim),
            "items": len(ids),
            "files": {p.name: {"sha256": sha256(p), "bytes": p.stat().st_size}
                      for p in sorted(tmp.iterdir()) if p.name != MANIFEST},
            "validation_max_abs_err": errors,
            "opal": cfg.to_dict(),
            "data": dict(data or {}),
            "metrics": dict(metrics or {}),
            **dict(extra or {}),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        _fsync_folder(tmp)
        final = model_dir / version
        if final.exists():
            raise FileExistsError(f"{final} already exists: pick another version")
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    verify_bundle(final)
    return final / MANIFEST


def _unit_mean_user(mean_user: np.ndarray, dim: int) -> np.ndarray:
    """``m_user`` as the bundle stores it: float32 [D], unit norm; anything else is refused before exporting."""
    m = np.asarray(mean_user, dtype=np.float64)
    norm = float(np.linalg.norm(m)) if m.shape == (dim,) else 0.0
    if m.shape != (dim,) or not np.isfinite(norm) or norm <= 1e-12:
        raise ValueError(f"mean_user must be a finite non-zero [{dim}] vector to match OPAL's dim, got shape "
                         f"{m.shape} and norm {norm}")
    return (m / norm).astype(np.float32)


def _fsync_folder(folder: Path) -> None:
    for p in folder.iterdir():
        with open(p, "rb") as fh:
            os.fsync(fh.fileno())


def random_bundle(out_dir: str | Path, n_items: int = 200, dim: int = 64, interests: int = 4, hidden: int = 64,
                  text_dim: int = 384, visual_dim: int = 128, seed: int = 0) -> Path:
    """A valid bundle from freshly initialised (seeded) modules and random unit items: for tests.

    Returns the path of its ``manifest.json``. Same code path as a trained
    export, so it passes the same checks.
    """
    from models.dream import ItemTower, ItemTowerConfig
    from models.opal import OpalConfig

    torch.manual_seed(seed)
    opal = Opal(OpalConfig(dim=dim, interests=interests, hidden=hidden)).eval()
    tower = ItemTower(ItemTowerConfig(text_dim=text_dim, visual_dim=visual_dim, dim=dim)).eval()
    rng = np.random.default_rng(seed)
    items = rng.standard_normal((n_items, dim)).astype(np.float32)
    return write_bundle(out_dir, opal, tower, items, [f"v{i}" for i in range(n_items)], text_dim, visual_dim,
                        data={"name": "random", "seed": seed}, extra={"random": True},
                        mean_user=rng.standard_normal(dim))


def export_checkpoint(ckpt_dir: str | Path, model_dir: str | Path, echo: Callable[[str], Any] = print) -> Path:
    """Bundle a ``dreamstream train`` checkpoint folder; returns the new ``manifest.json``.

    Reads ``config.json``, ``items.npy``, ``item_ids.json``, ``item_tower.pt``
    (+ ``features.json``), ``opal.pt``, ``metrics.json`` and ``mean_user.npy``
    (a checkpoint trained before it existed exports without it, saying so
    through ``echo``: its bundle's live refinement has no push-down).
    """
    from models.dream import load_features_json, load_item_tower
    from models.opal import load_opal

    ckpt = Path(ckpt_dir)
    needed = ["config.json", "items.npy", "item_ids.json", "item_tower.pt", "features.json", "opal.pt"]
    missing = [n for n in needed if not (ckpt / n).exists()]
    if missing:
        raise FileNotFoundError(f"{ckpt} lacks {missing}: run `dreamstream train --out {ckpt}` (with OPAL) first")
    config = json.loads((ckpt / "config.json").read_text())
    features = load_features_json(ckpt)
    metrics_path = ckpt / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    mean_user = np.load(ckpt / MEAN_USER) if (ckpt / MEAN_USER).exists() else None
    if mean_user is None:
        echo(f"{ckpt} has no {MEAN_USER} (trained before m_user was saved): the bundle ships none, so live "
             f"refinement of new videos has no push-down (beta0 inert); retrain to add it")
    return write_bundle(
        model_dir, load_opal(ckpt), load_item_tower(ckpt), np.load(ckpt / "items.npy"),
        json.loads((ckpt / "item_ids.json").read_text()), features["text_dim"], features["visual_dim"],
        data=config.get("data", {}), metrics=metrics,
        extra={"checkpoint": str(ckpt.resolve()), "modalities": {"text": bool(features.get("text", True)),
                                                                 "visual": bool(features.get("visual", True))},
               "seed": config.get("seed"), "half_life_s": config.get("train", {}).get("half_life_s")},
        mean_user=mean_user,
    )
