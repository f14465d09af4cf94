"""infra/milvus: the Helm values of the Milvus cluster agree with the sizing in docs/production.md; credentials are a Secret.

The values are not rendered with `helm template`: helm is in no Debian, PyPI or npm package here and the
chart comes from the zilliztech repository over the internet, so the checks below read the values file itself.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
VALUES = REPO / "infra" / "milvus" / "values.yaml"


def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def user_config() -> dict:
    return yaml.safe_load(values()["extraConfigFiles"]["user.yaml"])


def test_the_values_describe_a_cluster_on_the_existing_kafka_with_authentication():
    v = values()
    assert v["cluster"]["enabled"] is True
    assert v["externalKafka"]["enabled"] is True and not v["kafka"]["enabled"] and not v["pulsarv3"]["enabled"]
    assert v["etcd"]["replicaCount"] >= 3, "etcd needs a quorum that survives one node"
    assert user_config()["common"]["security"]["authorizationEnabled"] is True


def test_the_values_match_the_sizing_in_the_production_docs():
    """Query nodes, replicas and segment size are the numbers docs/production.md derives, not others."""
    doc = (DOCS / "production.md").read_text()
    section = doc[doc.index("### Sizing Milvus for 100M items"):]
    planned = {key: int(num) for key, num in re.findall(r"\*\*(query nodes|replicas|segment MB)\*\*: (\d+)", section)}
    assert planned.keys() == {"query nodes", "replicas", "segment MB"}, planned
    assert values()["queryNode"]["replicas"] == planned["query nodes"]
    assert user_config()["queryCoord"]["clusterLevelLoadReplicaNumber"] == planned["replicas"]
    assert user_config()["dataCoord"]["segment"]["maxSize"] == planned["segment MB"]


def test_the_credentials_example_is_a_secret_of_placeholders(k8s_docs):
    ((path, secret),) = [(p, d) for p, d in k8s_docs if d["kind"] == "Secret" and d["metadata"]["name"] == "dreamstream-milvus"]
    assert path.parent.name == "examples" and set(secret["stringData"]) == {"token"}
    assert "REPLACE-ME" in secret["stringData"]["token"]
