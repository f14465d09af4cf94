"""The synthetic generator: deterministic, readable by the reader, and its hidden structure is really there."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dreamstream.cli import main
from dreamstream.data.datagen import NAME, SynthConfig, generate
from dreamstream.data.recbole import Dataset, load_dataset
from dreamstream.data.split import leave_last_out
from dreamstream.engagement import Engagement

SMALL = SynthConfig(n_users=300, n_items=600, n_categories=6, events_per_user=(20, 50), seed=7)
FILES = (f"{NAME}.inter", f"{NAME}.item", "text_feat.npy", "image_feat.npy", "latent.npz")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Dataset, dict[str, np.ndarray]]:
    out = generate(tmp_path_factory.mktemp("synth"), SMALL, progress=False)
    return out, load_dataset(out), dict(np.load(out / "latent.npz"))


def _digest(folder: Path) -> dict[str, str]:
    return {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in FILES}


def test_same_seed_same_bytes_other_seed_other_data(small, tmp_path: Path) -> None:
    out, _, _ = small
    again = generate(tmp_path / "again", SMALL, progress=False)
    assert _digest(again) == _digest(out)
    other = generate(tmp_path / "other", SynthConfig(**{**SMALL.__dict__, "seed": 8}), progress=False)
    assert _digest(other)[f"{NAME}.inter"] != _digest(out)[f"{NAME}.inter"]


def test_round_trips_through_the_reader(small) -> None:
    out, ds, latent = small
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert ds.name == NAME and ds.n_items == SMALL.n_items and ds.n_users == SMALL.n_users
    assert ds.item_ids[0] == "v00001" and ds.item_ids[-1] == "v00600"
    assert all(u.startswith("u") and len(u) == 6 for u in ds.user_ids)
    assert ds.text_feat.shape == (SMALL.n_items, SMALL.text_dim)
    assert ds.image_feat.shape == (SMALL.n_items, SMALL.visual_dim)
    assert sorted(ds.columns) == ["duration_ms", "watch_ms"] and sorted(ds.item_fields) == ["category", "title"]
    names = latent["category_names"]
    assert ds.item_fields["category"] == [str(names[c]) for c in latent["item_category"]]
    assert np.all(np.diff(ds.timestamp) >= 0)  # written as a time-ordered log, in seconds
    assert 1.6e9 < ds.timestamp[0] < 2e9
    assert latent["event_category"].shape == (ds.n_interactions,)
    np.testing.assert_array_equal(latent["event_category"], latent["item_category"][ds.item])
    # a user never sees the same video twice, and never before it was uploaded
    pairs = ds.user * ds.n_items + ds.item
    assert np.unique(pairs).size == pairs.size
    assert np.all(ds.timestamp >= latent["item_release_ts"][ds.item] - 1e-3)


def test_skips_and_ratings_agree_with_the_engagement_rule(small) -> None:
    _, ds, _ = small
    positive = Engagement().is_positive(ds.columns["watch_ms"], ds.columns["duration_ms"])
    np.testing.assert_array_equal(positive, ds.rating > 0)
    assert abs((1 - positive.mean()) - SMALL.skip_rate) < 0.03
    assert np.all(ds.columns["duration_ms"] >= 5000)


def test_features_carry_the_latent_only_partly(small) -> None:
    """A linear map from the features must not recover the hidden item vector (it did with cosine 0.94):
    synthetic numbers would then measure the generator, not the model."""
    _, ds, latent = small
    target = latent["item_latent"]
    for feat in (ds.text_feat, ds.image_feat):
        x = np.c_[feat, np.ones(len(feat))]
        train = np.arange(len(feat)) % 5 != 0
        w = np.linalg.lstsq(x[train], target[train], rcond=None)[0]
        pred = x[~train] @ w
        cos = (pred * target[~train]).sum(1) / np.linalg.norm(pred, axis=1) / np.linalg.norm(target[~train], axis=1)
        assert 0.1 < cos.mean() < 0.75


def test_text_features_separate_categories_better_than_visual(small) -> None:
    _, ds, latent = small
    category = latent["item_category"]
    same = category[:, None] == category[None, :]
    np.fill_diagonal(same, False)
    different = category[:, None] != category[None, :]

    def intra_minus_inter(feat: np.ndarray) -> float:
        centred = feat - feat.mean(axis=0)
        unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
        cos = unit @ unit.T
        return float(cos[same].mean() - cos[different].mean())

    text, visual = intra_minus_inter(ds.text_feat), intra_minus_inter(ds.image_feat)
    assert text > 0.03  # closer within a hyper-category, but only partly (see the next test)
    assert 0 < visual < text  # visual carries the signal too, more weakly
    # titles use the category's words: a bag-of-words separates categories as well
    vocab = sorted({w for t in ds.item_fields["title"] for w in t.split()})
    index = {w: j for j, w in enumerate(vocab)}
    bow = np.zeros((ds.n_items, len(vocab)))
    for i, title in enumerate(ds.item_fields["title"]):
        for w in title.split():
            bow[i, index[w]] += 1
    assert intra_minus_inter(bow) > 0.1


def test_users_concentrate_on_few_categories_and_drift(small) -> None:
    _, ds, latent = small
    split = leave_last_out(ds)
    event_cat = latent["item_category"][ds.item]
    held = (latent["interest_categories"] >= 0).sum(axis=2).max(axis=1)  # interests per user
    top_share = []
    for u in range(ds.n_users):
        rows = (ds.user == u) & split.positive
        counts = np.bincount(event_cat[rows], minlength=SMALL.n_categories)
        top_share.append(np.sort(counts)[::-1][: held[u] + 1].sum() / counts.sum())
    # a user's positives fall (almost) entirely in their interests' categories, not spread over all six
    assert np.mean(top_share) > 0.9
    uniform_share = np.mean([(h + 1) / SMALL.n_categories for h in held])
    assert np.mean(top_share) > uniform_share + 0.2
    # positives follow the ground-truth interests; skips are mostly off-interest
    interest = latent["event_interest"]
    assert (interest[split.positive] >= 0).mean() > 0.9
    assert (interest[~split.positive] < 0).mean() > 0.5
    # about `drift` of the users swap an interest mid-timeline
    swapped = (latent["interest_categories"][:, 0] != latent["interest_categories"][:, 1]).any(axis=1)
    assert 0.3 < swapped.mean() < 0.6


def test_long_tail_of_item_popularity(small) -> None:
    _, ds, _ = small
    counts = np.sort(np.bincount(ds.item, minlength=ds.n_items))[::-1]
    assert counts[: ds.n_items // 10].sum() > 0.3 * counts.sum()  # the top 10% take a large share
    assert (counts < 5).mean() > 0.3  # and many videos have next to no history


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="interests_per_user"):
        SynthConfig(n_categories=3, interests_per_user=(1, 4))
    with pytest.raises(ValueError, match="n_items"):
        SynthConfig(n_items=2, n_categories=3, interests_per_user=(1, 2))


def test_cli_writes_and_reports(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["datagen", "--out", str(tmp_path / "d"), "--users", "40", "--items", "80",
                                       "--categories", "3", "--seed", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "40 users, 80 items, 3 categories" in result.output and "synthetic.inter" in result.output
    assert load_dataset(tmp_path / "d").n_items == 80


def test_cli_defaults_to_data_dir_and_reads_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREAMSTREAM_DATA_DIR", str(tmp_path / "dd"))
    monkeypatch.setenv("DREAMSTREAM_DATAGEN_USERS", "30")
    result = CliRunner().invoke(main, ["datagen", "--items", "50", "--categories", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert load_dataset(tmp_path / "dd").n_users == 30
    bad = CliRunner().invoke(main, ["datagen", "--out", str(tmp_path / "x"), "--items", "2", "--categories", "5"])
    assert bad.exit_code == 2 and "n_items" in bad.output
