"""A random (seeded, untrained) bundle built once per test session by the real export path."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def random_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export import random_bundle

    return random_bundle(tmp_path_factory.mktemp("models"), n_items=64, dim=16, interests=4, hidden=8,
                         text_dim=12, visual_dim=6, seed=0)
