"""Fixtures of the stream tests: a real ONNX bundle exported in a subprocess (streams/ never imports torch)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def export_random_bundle(model_dir: Path, n_items: int = 400, seed: int = 0) -> Path:
    """Run ``export.random_bundle`` in a child process; returns the version folder."""
    code = (
        "import sys; from export.bundle_writer import random_bundle; "
        f"print(random_bundle({str(model_dir)!r}, n_items={n_items}, seed={seed}))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return Path(done.stdout.strip().splitlines()[-1]).parent


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One exported bundle (folder of its version) shared by the stream tests."""
    return export_random_bundle(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def bundle(bundle_dir: Path):
    from dreamstream.bundle import load_bundle

    return load_bundle(bundle_dir)


@pytest.fixture(scope="session")
def item_vectors(bundle) -> dict[str, object]:
    return dict(zip(bundle.item_ids, bundle.items))


def manifest(bundle_dir: Path) -> dict:
    return json.loads((bundle_dir / "manifest.json").read_text())


@pytest.fixture(scope="session")
def two_bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two exported versions (different seeds) in one folder: names sort in export order."""
    root = tmp_path_factory.mktemp("models2")
    first = export_random_bundle(root, seed=0)
    second = export_random_bundle(root, seed=1)
    assert second.name > first.name
    return first, second
