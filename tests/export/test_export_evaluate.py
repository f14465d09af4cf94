"""`dreamstream export` and `dreamstream evaluate` on a checkpoint with a trained OPAL."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from dreamstream.bundle import load_bundle
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


def test_export_command_explains_an_incomplete_checkpoint(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "models")])
    assert result.exit_code != 0 and "dreamstream train" in result.output


def test_evaluate_command_reports_every_model_and_writes_plots(tiny_checkpoint: tuple[Path, Path],
                                                               tmp_path: Path) -> None:
    data, ckpt = tiny_checkpoint
    out = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["evaluate", "--data", str(data), "--checkpoint", str(ckpt), "--json", str(out),
                                       "--plots", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    models = {"popularity", "lightgcn", "dream", "dreamumm", "opal", "opal-max", "opal+dreamumm"}
    assert set(report["metrics"]) == models
    for row in report["metrics"].values():
        assert set(row) >= {f"{m}@{k}" for m in ("recall", "ndcg", "hitrate") for k in (10, 20, 50)}
        assert row["recall@10"] <= row["recall@20"] <= row["recall@50"]
    # the ground-truth item space makes the history-based users far better than random DREAM user vectors
    assert report["metrics"]["dreamumm"]["recall@50"] > report["metrics"]["dream"]["recall@50"]
    assert "true_multi_interest" in report["subsets"] and "multi_interest" in report["subsets"]
    for name in ("training_curves.png", "item_map_opal.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 1000
        assert f"plot written to {tmp_path / 'plots' / name}" in result.output
