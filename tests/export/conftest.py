"""A random (seeded, untrained) bundle built once per test session by the real export path."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def random_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export import random_bundle

    return random_bundle(tmp_path_factory.mktemp("models"), n_items=64, dim=16, interests=4, hidden=8,
                         text_dim=12, visual_dim=6, seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data dir, checkpoint dir): a small synthetic dataset and a checkpoint in `dreamstream train`'s layout.

    DREAM itself is not trained here (its own tests do that): the item space is
    the generator's ground-truth latent space, user/LightGCN vectors are random,
    ``mean_user.npy`` is m_user over that space's served examples of the
    training log (as `train` writes it; tests/models/test_dream_train.py checks train).
    OPAL *is* trained, by :func:`models.opal.train_opal`, for two epochs.
    """
    import json

    import numpy as np
    import torch

    from dreamstream.data.datagen import SynthConfig, generate
    from dreamstream.data.recbole import load_dataset
    from dreamstream.data.split import leave_last_out
    from dreamstream.dreamumm_ref import mean_user_direction
    from dreamstream.engagement import dataset_weights
    from dreamstream.evaluation.events import EventLog
    from models.dream import ItemTower, ItemTowerConfig, save_item_tower
    from models.opal import OpalConfig, train_opal
    from models.readout_trainer import served_examples

    data = generate(tmp_path_factory.mktemp("data"), SynthConfig(n_users=150, n_items=240, text_dim=16, visual_dim=8,
                                                                   events_per_user=(15, 40), seed=1), progress=False)
    ckpt = tmp_path_factory.mktemp("ckpt")
    from dreamstream.evaluation.provenance import data_record, dataset_before, parse_until

    whole = load_dataset(data)
    cutoff = parse_until("0.8", whole)
    ds = dataset_before(whole, cutoff)  # the tail after the cutoff is held out, as `train --train-until 0.8` does
    split = leave_last_out(ds)
    items = np.load(data / "latent.npz")["item_latent"].astype(np.float32)  # [I, 32], rows in item-id order
    rng = np.random.default_rng(0)
    np.save(ckpt / "items.npy", items)
    np.save(ckpt / "users.npy", rng.standard_normal((ds.n_users, 32)).astype(np.float32))
    served_users, _ = served_examples(EventLog.from_dataset(ds, dataset_weights(ds)), items, 3600.0)
    np.save(ckpt / "mean_user.npy", mean_user_direction(served_users.numpy()))
    np.save(ckpt / "lightgcn_items.npy", rng.standard_normal((ds.n_items, 32)).astype(np.float32))
    np.save(ckpt / "lightgcn_users.npy", rng.standard_normal((ds.n_users, 32)).astype(np.float32))
    torch.manual_seed(0)
    save_item_tower(ItemTower(ItemTowerConfig(text_dim=16, visual_dim=8, dim=32)), ckpt / "item_tower.pt")
    (ckpt / "features.json").write_text(json.dumps({"text_dim": 16, "visual_dim": 8, "text": True, "visual": True}))
    (ckpt / "item_ids.json").write_text(json.dumps([str(i) for i in ds.item_ids]))
    (ckpt / "user_ids.json").write_text(json.dumps([str(u) for u in ds.user_ids]))
    (ckpt / "config.json").write_text(json.dumps({
        "data": {"path": str(data), "name": ds.name, "n_users": ds.n_users, "n_items": ds.n_items, "split": "loo",
                 "text_dim": 16, "visual_dim": 8, **data_record(whole, cutoff)}, "dream": {"dim": 32}, "seed": 0,
        "epochs": 2, "train": {"half_life_s": 3600.0}}))
    (ckpt / "metrics.json").write_text(json.dumps({"dream": {"valid": {"recall@20": 0.0}}}))
    (ckpt / "history.json").write_text(json.dumps({"dream": [{"epoch": 1, "loss": 1.0, "recall@20": 0.0}]}))
    train_opal(items, split, ds, epochs=2, seed=0, out_dir=ckpt, config=OpalConfig(dim=32, hidden=16, max_len=20),
               progress=False)
    return data, ckpt
