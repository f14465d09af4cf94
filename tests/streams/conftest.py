"""Fixtures of the stream tests: a real ONNX bundle exported in a subprocess (streams/ never imports torch)."""
from __future__ import annotations

from pathlib import Path

import pytest

from e2e_support import export_random_bundle


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


@pytest.fixture(scope="session")
def item_store(bundle, tmp_path_factory: pytest.TempPathFactory):
    """The bundle's items in the item store the tests run on (memory; TEST_ITEM_STORE, tests/conftest.py)."""
    import numpy as np

    from e2e_support import ITEM_STORE
    from dreamstream.settings import Settings
    from streams.items.store import open_item_store

    store = open_item_store(Settings(state_dir=tmp_path_factory.mktemp("items"), **ITEM_STORE), "item-vectors")
    store.put(list(bundle.item_ids), np.asarray(bundle.items, np.float32))
    return store


@pytest.fixture(scope="session")
def two_bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two exported versions (different seeds) in one folder: names sort in export order."""
    root = tmp_path_factory.mktemp("models2")
    first = export_random_bundle(root, seed=0)
    second = export_random_bundle(root, seed=1)
    assert second.name > first.name
    return first, second


@pytest.fixture(scope="session")
def same_space_bundles(two_bundles, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The first bundle, and the second one's step functions over the first one's items: a new version, same item space.

    What a re-export or a new OPAL head looks like, and what a live worker
    may hot-reload (a bundle with other item vectors must be rolled out).
    """
    import json
    import shutil

    from dreamstream.checksums import sha256_file

    first, second = two_bundles
    folder = tmp_path_factory.mktemp("same-space") / second.name
    shutil.copytree(second, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    for name in ("items.npy", "item_ids.json"):
        shutil.copyfile(first / name, folder / name)
        manifest["files"][name].update(sha256=sha256_file(folder / name), bytes=(folder / name).stat().st_size)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return first, folder
