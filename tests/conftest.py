"""Fixtures shared by every test: a private broker on a free port, and per-test settings.

The broker is session-scoped (starting tansu takes well under a second, but
Faust groups and topics pile up); each test gets its own topic prefix so
tests never see each other's records.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from dreamstream.broker import EmbeddedBroker, free_port
from dreamstream.settings import Settings
from e2e_support import ITEM_STORE

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A memory-backed tansu broker private to this test session."""
    embedded = EmbeddedBroker(port=free_port(), log_dir=tmp_path_factory.mktemp("broker-logs"))
    with embedded:
        yield embedded


@pytest.fixture
def make_settings(broker: EmbeddedBroker, tmp_path: Path) -> Callable[..., Settings]:
    """Settings pointing at the private broker, with a unique topic prefix and temp folders."""

    def make(**overrides: object) -> Settings:
        base = dict(
            broker=broker.url,
            topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
            model_dir=tmp_path / "models",
            index_dir=tmp_path / "index",
            data_dir=tmp_path / "data",
            state_dir=tmp_path / "state",
            **ITEM_STORE,
        )
        base.update(overrides)
        return Settings(**base)

    return make


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's DREAMSTREAM_* variables must not leak into tests."""
    for name in list(os.environ):
        if name.startswith("DREAMSTREAM_") and name != "DREAMSTREAM_CACHE":
            monkeypatch.delenv(name)
