"""Fixtures for the infra and docs tests: the parsed files under infra/ and docs/."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
DOCS = REPO / "docs"


@pytest.fixture(scope="session")
def compose() -> dict:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


@pytest.fixture(scope="session")
def k8s_docs() -> list[tuple[Path, dict]]:
    """Every Kubernetes object under infra/k8s (the kustomization file excluded), with its file."""
    docs = []
    for path in sorted((INFRA / "k8s").rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs
