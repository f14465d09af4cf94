"""Fixtures of the scale-out tests (helpers in ``scale_support``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from e2e_support import export_random_bundle
from scale_support import Seen, start_reader


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_random_bundle(tmp_path_factory.mktemp("models"))


@pytest.fixture
def live_reader() -> Callable[[Any], Seen]:
    """Start a background reader of user-embeddings (from the beginning); stopped after the test."""
    started: list[Seen] = []

    def start(settings: Any) -> Seen:
        started.append(start_reader(settings))
        return started[-1]

    yield start
    for seen in started:
        seen.close()


