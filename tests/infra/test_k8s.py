"""infra/k8s: every object against the Kubernetes schemas, plus what the design needs of each."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from dreamstream.settings import Settings

K8S = Path(__file__).resolve().parents[2] / "infra" / "k8s"
KUBE_VERSION = "1.30"
WORKLOADS = ("Deployment", "StatefulSet", "Job")


def by_kind(docs, kind: str, name: str | None = None) -> list[dict]:
    return [d for _, d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def containers(doc: dict) -> list[dict]:
    return doc["spec"]["template"]["spec"]["containers"]


def configmap_settings(docs) -> Settings:
    data = by_kind(docs, "ConfigMap", "dreamstream-settings")[0]["data"]
    fields = {k.removeprefix("DREAMSTREAM_").lower(): v for k, v in data.items()}
    assert set(fields) <= set(Settings.model_fields), sorted(set(fields) - set(Settings.model_fields))
    return Settings(**fields)


def test_every_object_has_the_required_keys(k8s_docs):
    assert len(k8s_docs) >= 10
    for path, doc in k8s_docs:
        for key in ("apiVersion", "kind", "metadata"):
            assert key in doc, f"{path.name}: {doc.get('kind')} has no {key}"
        assert doc["metadata"].get("name"), path
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "dreamstream", path
            assert "spec" in doc or "data" in doc, path


def test_objects_validate_against_the_kubernetes_schema(k8s_docs):
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (test extra) carries the schemas")
    for path, doc in k8s_docs:
        kv.validate(doc, KUBE_VERSION, strict=True)
    typo = dict(by_kind(k8s_docs, "PodDisruptionBudget")[0])
    typo["spec"] = dict(typo["spec"], maxUnavailabel=1)
    with pytest.raises(kv.ValidationError):  # strict: an unknown field is an error, not silence
        kv.validate(typo, KUBE_VERSION, strict=True)


def test_kustomization_lists_every_manifest_and_builds():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed; the listing check above still ran")
    done = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(list(yaml.safe_load_all(done.stdout))) >= 9


def test_workloads_have_images_settings_and_resources(k8s_docs):
    names = {d["metadata"]["name"] for _, d in k8s_docs if d["kind"] == "ConfigMap"}
    for path, doc in k8s_docs:
        if doc["kind"] not in WORKLOADS:
            continue
        for c in containers(doc):
            assert c.get("image"), f"{path.name}: container {c['name']} has no image"
            assert "resources" in c, f"{path.name}: container {c['name']} has no resources"
            refs = [e["configMapRef"]["name"] for e in c.get("envFrom", []) if "configMapRef" in e]
            assert refs and set(refs) <= names, f"{path.name}: {c['name']} must read the settings ConfigMap"


def test_configmap_values_are_valid_settings(k8s_docs):
    settings = configmap_settings(k8s_docs)
    assert settings.store == "rocksdb://" and settings.replication == 3
    assert settings.web_bind == "0.0.0.0"


def test_worker_statefulset_keeps_rocksdb_state_on_a_pvc_and_has_probes(k8s_docs):
    settings = configmap_settings(k8s_docs)
    worker = by_kind(k8s_docs, "StatefulSet", "dreamstream-worker")[0]
    spec = worker["spec"]
    assert spec["replicas"] <= settings.partitions, "more workers than partitions would sit idle"
    (c,) = containers(worker)
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    assert env.get("DREAMSTREAM_STORE", settings.store) == "rocksdb://"
    claims = {t["metadata"]["name"] for t in spec["volumeClaimTemplates"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert "state" in claims and mounts["state"]["mountPath"] == str(settings.state_dir)
    assert mounts["models"]["mountPath"] == str(settings.model_dir) and mounts["models"]["readOnly"] is True
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["web"] == settings.web_port
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] == "web" and c[probe]["httpGet"]["path"] == "/metrics"


def test_indexer_writes_the_shared_index_volume(k8s_docs):
    settings = configmap_settings(k8s_docs)
    indexer = by_kind(k8s_docs, "StatefulSet", "dreamstream-indexer")[0]
    (c,) = containers(indexer)
    assert c["args"] == ["indexer"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["index"]["mountPath"] == str(settings.index_dir) and not mounts["index"].get("readOnly")
    volumes = {v["name"]: v for v in indexer["spec"]["template"]["spec"]["volumes"]}
    claim = volumes["index"]["persistentVolumeClaim"]["claimName"]
    pvc = by_kind(k8s_docs, "PersistentVolumeClaim", claim)[0]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"], "ranking services on other nodes read it"
    assert {p["containerPort"] for p in c["ports"]} == {settings.metrics_port}
    assert "readinessProbe" in c and "livenessProbe" in c
    ranking = by_kind(k8s_docs, "Deployment", "ranking")[0]
    (rc,) = containers(ranking)
    assert [m for m in rc["volumeMounts"] if m["name"] == "index" and m["readOnly"] is True]


def test_services_and_pdb_select_the_pods_they_mean(k8s_docs):
    settings = configmap_settings(k8s_docs)
    labels = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
              for _, d in k8s_docs if d["kind"] == "StatefulSet"}
    for svc in by_kind(k8s_docs, "Service"):
        target = next(n for n, lab in labels.items() if svc["spec"]["selector"].items() <= lab.items())
        port = svc["metadata"]["annotations"]["prometheus.io/port"]
        assert int(port) == (settings.web_port if target.endswith("worker") else settings.metrics_port)
    (pdb,) = by_kind(k8s_docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels["dreamstream-worker"].items()


def test_topics_job_runs_dreamstream_topics(k8s_docs):
    (job,) = by_kind(k8s_docs, "Job")
    (c,) = containers(job)
    assert c["args"] == ["topics"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")
