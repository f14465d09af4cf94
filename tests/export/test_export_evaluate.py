"""`dreamstream export` and `dreamstream evaluate` on a checkpoint with a trained OPAL."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from dreamstream.bundle import MEAN_USER, load_bundle
from dreamstream.cli import main

SHARED = Path(__file__).resolve().parents[2].parent / "shared"  # as tests/conftest.py locates it


def test_train_opal_writes_its_checkpoint_entries(tiny_checkpoint: tuple[Path, Path]) -> None:
    _, ckpt = tiny_checkpoint
    metrics = json.loads((ckpt / "metrics.json").read_text())
    history = json.loads((ckpt / "history.json").read_text())
    assert "dream" in metrics and "dream" in history  # merged, not overwritten
    assert metrics["opal"]["pretrain_epochs"] == 1 and metrics["opal"]["max_offdiag_cos"] < 0.2
    assert [row["stage"] for row in history["opal"]] == ["soft", "hard"]
    assert all(0 <= row["recall@20"] <= 1 for row in history["opal"])
    assert (ckpt / "opal.pt").exists()


def test_export_command_writes_a_bundle_the_contract_checker_accepts(tiny_checkpoint: tuple[Path, Path],
                                                                      tmp_path: Path) -> None:
    _, ckpt = tiny_checkpoint
    result = CliRunner().invoke(main, ["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "models")])
    assert result.exit_code == 0, result.output
    bundle = load_bundle(tmp_path / "models")
    m = bundle.manifest
    assert (m.dim, m.interests, m.hidden, m.text_dim, m.visual_dim) == (32, 2, 16, 16, 8)
    assert m.raw["data"]["n_items"] == len(bundle.item_ids) and "opal" in m.raw["metrics"]
    run = subprocess.run([sys.executable, str(SHARED / "contract" / "check_bundle.py"), str(m.path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    # m_user rides along, checksummed: the checkpoint's (train's mean_user_direction of the served examples)
    assert MEAN_USER in m.files and "no push-down" not in result.output
    assert bundle.mean_user.dtype == np.float32 and bundle.mean_user.shape == (32,)
    assert np.allclose(bundle.mean_user, np.load(ckpt / MEAN_USER), atol=1e-6)
    assert abs(np.linalg.norm(bundle.mean_user) - 1) < 1e-5


def test_a_checkpoint_without_mean_user_exports_a_bundle_without_it(tiny_checkpoint: tuple[Path, Path],
                                                                    tmp_path: Path) -> None:
    _, ckpt = tiny_checkpoint
    old = tmp_path / "old-ckpt"  # trained before m_user was saved
    shutil.copytree(ckpt, old, ignore=shutil.ignore_patterns(MEAN_USER))
    result = CliRunner().invoke(main, ["export", "--checkpoint", str(old), "--out", str(tmp_path / "models")])
    assert result.exit_code == 0, result.output
    assert result.output.count("no push-down") == 1, result.output
    bundle = load_bundle(tmp_path / "models")
    assert MEAN_USER not in bundle.manifest.files and not (bundle.root / MEAN_USER).exists()
    assert np.array_equal(bundle.mean_user, np.zeros(32, np.float32))


def test_export_command_explains_an_incomplete_checkpoint(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "models")])
    assert result.exit_code != 0 and "dreamstream train" in result.output


def test_evaluate_checkpoint_scores_only_the_events_after_its_training_cutoff(tiny_checkpoint: tuple[Path, Path],
                                                                              tmp_path: Path) -> None:
    from dreamstream.data.recbole import load_dataset

    data, ckpt = tiny_checkpoint
    out = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["evaluate", "--data", str(data), "--checkpoint", str(ckpt), "--json", str(out),
                                       "--plots", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    cutoff = json.loads((ckpt / "config.json").read_text())["data"]["trained_before"]
    ds = load_dataset(data)
    assert report["scored"]["events"] == int((ds.timestamp >= cutoff).sum()) > 0
    assert set(report["metrics"]) == {"popularity", "dream (served readout)", "served: dream + opal"}
    for row in report["metrics"].values():
        assert 0 <= row["hitrate@10"] <= row["hitrate@20"] <= row["hitrate@50"] <= 1
    # the generator's ground-truth item space: the streamed user vector beats popularity on the held-out tail
    assert report["metrics"]["dream (served readout)"]["hitrate@20"] > report["metrics"]["popularity"]["hitrate@20"]
    for name in ("training_curves.png", "item_map_opal.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 1000


def test_evaluate_refuses_to_score_a_checkpoint_on_its_own_training_events(tiny_checkpoint: tuple[Path, Path],
                                                                           tmp_path: Path) -> None:
    import shutil

    data, ckpt = tiny_checkpoint
    every = tmp_path / "ckpt"
    shutil.copytree(ckpt, every)
    config = json.loads((every / "config.json").read_text())
    config["data"]["trained_before"] = config["data"]["trained_before"] + 10 ** 9  # as trained on the whole log
    (every / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(main, ["evaluate", "--data", str(data), "--checkpoint", str(every)])
    assert result.exit_code != 0
    message = result.output.strip().splitlines()
    assert len(message) == 1 and "refusing to score events it was trained on" in message[0], result.output
    del config["data"]["trained_before"]  # a checkpoint written before provenance was recorded
    (every / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(main, ["evaluate", "--data", str(data), "--checkpoint", str(every)])
    assert result.exit_code != 0 and "does not record the events it was trained on" in result.output
