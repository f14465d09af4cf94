"""Fixtures for the index tests: clustered unit vectors like a trained catalogue, and version helpers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dreamstream.index.builder import BuildParams, build_version
from dreamstream.index.manifest import Manifest
from dreamstream.index.publish import install
from dreamstream.index.store import ItemStore
from backends_support import SpacePublisher


def clustered(n: int, dim: int = 32, clusters: int = 64, noise: float = 0.8, seed: int = 0) -> np.ndarray:
    """Unit vectors around ``clusters`` centres: item embeddings are clustered by topic, not uniform."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, clusters, n)] + noise / np.sqrt(dim) * rng.standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def vectors_factory():
    return clustered


def publish_store(store: ItemStore, index_dir: Path, params: BuildParams | None = None, previous: Manifest | None = None,
                  rebuild: set[int] | None = None) -> Manifest:
    """Build the store into a version and make it CURRENT (what the indexer does, without the broker)."""
    built = build_version(store, index_dir, params or BuildParams(), rebuild=rebuild, previous=previous)
    install(built, index_dir)
    return built.manifest


@pytest.fixture
def publish():
    return publish_store


# --- Milvus Lite: the second index backend ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def milvus_uri():
    """One Milvus Lite server process for the session, in a temporary folder; tests isolate by topic prefix.

    The folder is a plain temporary directory, not pytest's numbered
    basetemp: pytest deletes old basetemps of the same user when a later
    session starts, which would pull the data folder from under a server
    that lives for the whole session.
    """
    import tempfile

    from dreamstream.index.milvus_lite_server import MilvusLiteServer

    with tempfile.TemporaryDirectory(prefix="dreamstream-milvus-") as tmp:
        with MilvusLiteServer(Path(tmp) / "data", Path(tmp) / "milvus.log") as server:
            yield server.uri


@pytest.fixture
def milvus_names(request):
    """Names no other test uses in the shared server (a fresh topic prefix per test)."""
    import uuid

    from dreamstream.index.milvus_connection import MilvusNames

    return MilvusNames(f"t{uuid.uuid4().hex[:8]}.")


@pytest.fixture(params=["faiss", "milvus"])
def backend_kind(request) -> str:
    return request.param


@pytest.fixture
def spaces(request, backend_kind, tmp_path):
    """A :class:`SpacePublisher` for the test's backend (parametrized: every test using it runs on both)."""
    if backend_kind == "milvus":
        return SpacePublisher("milvus", tmp_path, request.getfixturevalue("milvus_uri"), request.getfixturevalue("milvus_names"))
    return SpacePublisher("faiss", tmp_path)
