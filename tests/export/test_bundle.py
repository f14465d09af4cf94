"""Export: ONNX vs PyTorch, the shared contract checker, checksums and versions."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamstream.bundle import CONTRACT, MEAN_USER, BundleError, latest_version, load_bundle, sha256, verify_bundle
from export.onnx_export import random_inputs
SHARED = Path(__file__).resolve().parents[2].parent / "shared"  # as tests/conftest.py locates it


def test_shared_contract_checker_accepts_an_exported_bundle(random_manifest: Path) -> None:
    run = subprocess.run([sys.executable, str(SHARED / "contract" / "check_bundle.py"), str(random_manifest)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("batch", [1, 37])
def test_onnx_equals_pytorch(random_manifest: Path, batch: int) -> None:
    from models.dream import ItemTower, ItemTowerConfig
    from models.dreamumm import DreamUMMStep
    from models.opal import Opal, OpalConfig

    bundle = load_bundle(random_manifest.parent)
    m = bundle.manifest
    torch.manual_seed(0)  # random_bundle's seed: the same freshly initialised modules
    modules = {"opal_step": Opal(OpalConfig(dim=m.dim, interests=m.interests, hidden=m.hidden)).eval(),
               "item_tower": ItemTower(ItemTowerConfig(text_dim=m.text_dim, visual_dim=m.visual_dim, dim=m.dim)).eval(),
               "dreamumm_step": DreamUMMStep()}
    rng = np.random.default_rng(batch)
    for name, function in CONTRACT.items():
        feeds = random_inputs(function, m.sizes(), batch, rng)
        got = bundle.run(name, **feeds)
        with torch.no_grad():
            ref = modules[name](*(torch.from_numpy(feeds[p.name]) for p in function.inputs))
        ref = ref if isinstance(ref, tuple) else (ref,)
        for port, r in zip(function.outputs, ref):
            assert got[port.name].shape == tuple(r.shape), (name, port.name)
            assert np.abs(got[port.name] - r.numpy()).max() <= 1e-4, (name, port.name)


def test_manifest_lists_checksums_and_shapes(random_manifest: Path) -> None:
    m = verify_bundle(random_manifest.parent)
    assert set(m.files) >= {"dreamumm_step.onnx", "opal_step.onnx", "item_tower.onnx", "items.npy", "item_ids.json",
                            MEAN_USER}
    raw = json.loads(random_manifest.read_text())
    assert (raw["dim"], raw["interests"], raw["hidden"], raw["text_dim"], raw["visual_dim"]) == (16, 4, 8, 12, 6)
    items = np.load(random_manifest.parent / "items.npy")
    assert items.dtype == np.float32 and np.allclose(np.linalg.norm(items, axis=1), 1, atol=1e-5)


def test_a_tampered_file_is_refused_with_a_clear_error(random_manifest: Path, tmp_path: Path) -> None:
    copy = tmp_path / random_manifest.parent.name
    shutil.copytree(random_manifest.parent, copy)
    with open(copy / "opal_step.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match=r"opal_step\.onnx: sha256 .* does not match .* Re-export"):
        load_bundle(copy)


def test_a_missing_checksum_entry_is_refused(random_manifest: Path, tmp_path: Path) -> None:
    copy = tmp_path / random_manifest.parent.name
    shutil.copytree(random_manifest.parent, copy)
    raw = json.loads((copy / "manifest.json").read_text())
    del raw["files"]["items.npy"]
    (copy / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="items.npy"):
        verify_bundle(copy)


def _copy_with_mean_user(random_manifest: Path, folder: Path, mean_user: np.ndarray | None) -> Path:
    """A copy of the random bundle whose mean_user.npy is ``mean_user`` (checksum updated), or gone when None."""
    copy = folder / random_manifest.parent.name
    shutil.copytree(random_manifest.parent, copy)
    raw = json.loads((copy / "manifest.json").read_text())
    (copy / MEAN_USER).unlink()
    del raw["files"][MEAN_USER]
    if mean_user is not None:
        np.save(copy / MEAN_USER, mean_user)
        raw["files"][MEAN_USER] = {"sha256": sha256(copy / MEAN_USER)}
    (copy / "manifest.json").write_text(json.dumps(raw))
    return copy


def test_mean_user_is_a_unit_vector_of_the_item_space(random_manifest: Path) -> None:
    m_user = load_bundle(random_manifest.parent).mean_user
    assert m_user.dtype == np.float32 and m_user.shape == (16,)
    assert abs(np.linalg.norm(m_user) - 1) < 1e-5
    assert np.array_equal(m_user, np.load(random_manifest.parent / MEAN_USER))


def test_a_bundle_without_mean_user_loads_with_zeros(random_manifest: Path, tmp_path: Path) -> None:
    copy = _copy_with_mean_user(random_manifest, tmp_path, None)  # exported before m_user existed
    m_user = load_bundle(copy).mean_user
    assert m_user.dtype == np.float32 and np.array_equal(m_user, np.zeros(16, np.float32))


@pytest.mark.parametrize("bad, message", [(np.ones(17, np.float32) / np.sqrt(17), r"float32 \[16\]"),
                                          (np.ones((1, 16), np.float32) / 4, r"float32 \[16\]"),
                                          (np.full(16, 0.5, np.float32), "unit vector")])
def test_a_wrong_mean_user_is_refused(random_manifest: Path, tmp_path: Path, bad: np.ndarray, message: str) -> None:
    copy = _copy_with_mean_user(random_manifest, tmp_path, bad)
    with pytest.raises(BundleError, match=rf"mean_user\.npy .*{message}"):
        load_bundle(copy)


def test_a_changed_mean_user_fails_its_checksum(random_manifest: Path, tmp_path: Path) -> None:
    copy = tmp_path / random_manifest.parent.name
    shutil.copytree(random_manifest.parent, copy)
    np.save(copy / MEAN_USER, -np.load(copy / MEAN_USER))
    with pytest.raises(BundleError, match=r"mean_user\.npy: sha256 .* does not match"):
        load_bundle(copy)


def test_latest_version_ignores_half_written_folders(random_manifest: Path, tmp_path: Path) -> None:
    old = tmp_path / "v20250101-000000"
    new = tmp_path / "v20250101-000000-2"
    shutil.copytree(random_manifest.parent, old)
    shutil.copytree(random_manifest.parent, new)
    (tmp_path / ".partial-abc").mkdir()
    (tmp_path / "v20991231-235959").mkdir()  # no manifest: never chosen
    assert latest_version(tmp_path) == new
    assert load_bundle(tmp_path).root == new
    assert latest_version(tmp_path / "nothing") is None


def test_bundle_steps_and_empty_state(random_manifest: Path) -> None:
    bundle = load_bundle(random_manifest.parent)
    state = bundle.empty_opal_state(3)
    item = bundle.items[:3]
    out = bundle.opal_step(item, state["hidden"], state["global"], state["soft"], np.ones((3, 1), np.float32))
    assert out["assign"].dtype == np.int64 and out["assign"].shape == (3,)
    assert np.allclose(np.linalg.norm(out["interests"], axis=2), 1, atol=1e-4)
    d = bundle.dreamumm_step(np.zeros((3, 16), np.float32), item, np.ones((3, 1), np.float32), np.ones((3, 1), np.float32))
    assert np.allclose(d["user"], item, atol=1e-5)
    assert len(bundle.item_ids) == 64


def test_exported_opal_step_follows_the_model_through_a_stream_from_an_empty_state(random_manifest: Path) -> None:
    """The ONNX step (``export.opal_step_graph``) equals ``Opal.step`` from zero state, step after step.

    Random validation inputs have every interest already seen; a new user's
    state is all zeros and an interest stays zero until an item is assigned
    to it, which takes the other branch of every readout ``where``.
    """
    from models.opal import Opal, OpalConfig

    bundle = load_bundle(random_manifest.parent)
    m = bundle.manifest
    torch.manual_seed(0)
    opal = Opal(OpalConfig(dim=m.dim, interests=m.interests, hidden=m.hidden)).eval()
    rng = np.random.default_rng(3)
    users = 9
    hidden, glob, soft = (np.zeros((users, m.interests, m.hidden), np.float32), np.zeros((users, m.hidden), np.float32),
                          np.zeros((users, m.interests, m.dim), np.float32))
    seen_empty_interest = False
    for step in range(6):
        item = rng.standard_normal((users, m.dim)).astype(np.float32)
        item /= np.linalg.norm(item, axis=1, keepdims=True)
        decay = np.full((users, 1), 0.9, np.float32)
        got = bundle.opal_step(item, hidden, glob, soft, decay)
        with torch.no_grad():
            ref = opal.step(*(torch.from_numpy(x) for x in (item, hidden, glob, soft, decay)))
        for name, r in zip(("hidden_out", "global_out", "soft_out", "interests", "weights", "assign", "probs"), ref):
            assert np.abs(got[name].astype(np.float64) - r.numpy()).max() <= 1e-5, (step, name)
        seen_empty_interest |= bool((np.abs(got["hidden_out"]).sum(axis=2) == 0).any())
        hidden, glob, soft = got["hidden_out"], got["global_out"], got["soft_out"]
    assert seen_empty_interest, "the stream never exercised an interest that was not stepped yet"
