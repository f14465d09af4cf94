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
KAFKA_SECRET = "dreamstream-kafka"
KAFKA_DIR = "/etc/dreamstream/kafka"
KAFKA_FILES = {"sasl-password", "ca.crt", "tls.crt", "tls.key"}
PROMETHEUS_NAMESPACE = {"kubernetes.io/metadata.name": "monitoring"}
PROMETHEUS_POD = {"app.kubernetes.io/name": "prometheus"}


def by_kind(docs, kind: str, name: str | None = None) -> list[dict]:
    return [d for _, d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def containers(doc: dict) -> list[dict]:
    return doc["spec"]["template"]["spec"]["containers"]


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def workloads(docs) -> list[tuple[Path, dict]]:
    return [(path, d) for path, d in docs if d["kind"] in WORKLOADS]


def selects(selector: dict, labels: dict) -> bool:
    """Does a LabelSelector (matchLabels only; {} selects everything) select these labels?"""
    assert set(selector) <= {"matchLabels"}, f"only matchLabels selectors are checked here: {selector}"
    return selector.get("matchLabels", {}).items() <= labels.items()


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
            assert "spec" in doc or "data" in doc or "stringData" in doc, path


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


def test_the_namespace_enforces_the_restricted_pod_security_standard(k8s_docs):
    (ns,) = by_kind(k8s_docs, "Namespace")
    labels = ns["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels.get("pod-security.kubernetes.io/enforce-version", "latest") == "latest"


def test_every_container_is_locked_down(k8s_docs):
    """allowPrivilegeEscalation false, read-only root (with /tmp on an emptyDir), no capability, non-root, seccomp."""
    seen = 0
    for path, doc in workloads(k8s_docs):
        spec = pod_spec(doc)
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), path.name
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])}
        for c in spec["containers"] + spec.get("initContainers", []):
            where = f"{path.name}: container {c['name']}"
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("runAsNonRoot") is True, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"] and not sc["capabilities"].get("add"), where
            assert sc.get("seccompProfile") == {"type": "RuntimeDefault"}, where
            assert not sc.get("privileged") and sc.get("runAsUser", spec.get("securityContext", {}).get("runAsUser")) != 0
            assert not [p for p in c.get("ports", []) if "hostPort" in p], where
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert set(mounts.values()) <= set(volumes) | claims, f"{where} mounts a volume the pod does not have"
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: a read-only root needs a writable /tmp"
            seen += 1
    assert seen >= 4  # worker, indexer, topics, the ranking example


def test_worker_and_indexer_state_stays_writable(k8s_docs):
    """Their only writes besides /tmp go to volumes: the worker's state, the indexer's index and state."""
    settings = configmap_settings(k8s_docs)
    for name, writable in (("dreamstream-worker", {settings.state_dir}),
                           ("dreamstream-indexer", {settings.state_dir, settings.index_dir})):
        (c,) = containers(by_kind(k8s_docs, "StatefulSet", name)[0])
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        for folder in writable:
            assert str(folder) in mounts and not mounts[str(folder)].get("readOnly"), (name, folder)


def test_kafka_credentials_are_mounted_from_a_secret(k8s_docs):
    """Every pod that talks to Kafka mounts the dreamstream-kafka Secret read-only at /etc/dreamstream/kafka."""
    for path, doc in workloads(k8s_docs):
        spec = pod_spec(doc)
        secret_volumes = {v["name"]: v["secret"] for v in spec.get("volumes", []) if "secret" in v}
        names = [n for n, sec in secret_volumes.items() if sec["secretName"] == KAFKA_SECRET]
        assert len(names) == 1, f"{path.name}: no volume of Secret {KAFKA_SECRET}"
        volume = secret_volumes[names[0]]
        assert volume.get("defaultMode", 0o644) & 0o007 == 0, f"{path.name}: credentials readable by any user"
        assert "items" not in volume, "every key is mounted, as a file named after it"
        for c in spec["containers"]:
            (mount,) = [m for m in c.get("volumeMounts", []) if m["name"] == names[0]]
            assert mount["mountPath"] == KAFKA_DIR and mount["readOnly"] is True, f"{path.name}: {c['name']}"
        if volume.get("optional") is not False:  # group-readable files need the pod's fsGroup
            assert spec["securityContext"].get("fsGroup") == spec["securityContext"].get("runAsUser"), path.name
    ((path, secret),) = [(p, d) for p, d in k8s_docs if d["kind"] == "Secret" and d["metadata"]["name"] == KAFKA_SECRET]
    assert secret["metadata"]["name"] == KAFKA_SECRET and secret["type"] == "Opaque"
    assert set(secret.get("stringData", {})) | set(secret.get("data", {})) == KAFKA_FILES
    assert path.parent.name == "examples", "credentials are created by the operator, never applied from the repository"
    assert all("REPLACE-ME" in v for v in secret["stringData"].values()), "the example carries placeholders only"


def policies_selecting(docs, labels: dict) -> list[dict]:
    return [p for p in by_kind(docs, "NetworkPolicy") if selects(p["spec"]["podSelector"], labels)
            and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]


def test_ingress_to_dreamstream_pods_is_denied_by_default(k8s_docs):
    (deny,) = [p for p in by_kind(k8s_docs, "NetworkPolicy") if not p["spec"].get("ingress")]
    assert deny["spec"]["podSelector"] == {} and deny["spec"]["policyTypes"] == ["Ingress"]
    for path, doc in workloads(k8s_docs):
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert deny in policies_selecting(k8s_docs, labels), f"{path.name}: its pods are not isolated"


def test_only_prometheus_reaches_the_metrics_ports(k8s_docs):
    """Worker and indexer: exactly one ingress peer (Prometheus: namespace AND pod label) on exactly their metrics port."""
    settings = configmap_settings(k8s_docs)
    ports = {"dreamstream-worker": settings.web_port, "dreamstream-indexer": settings.metrics_port}
    for path, doc in workloads(k8s_docs):
        name = doc["metadata"]["name"]
        labels = doc["spec"]["template"]["metadata"]["labels"]
        rules = [r for p in policies_selecting(k8s_docs, labels) for r in p["spec"].get("ingress", [])]
        if name not in ports:
            assert not rules, f"{path.name}: {name} accepts ingress"
            continue
        (c,) = containers(doc)
        assert ports[name] in {p["containerPort"] for p in c["ports"]}
        assert rules, f"Prometheus cannot reach {name}"
        for rule in rules:
            assert rule["ports"] == [{"protocol": "TCP", "port": ports[name]}], (name, rule)
            for peer in rule["from"]:
                assert set(peer) == {"namespaceSelector", "podSelector"}, f"{name}: {peer} is more than Prometheus"
                assert peer["namespaceSelector"] == {"matchLabels": PROMETHEUS_NAMESPACE}
                assert peer["podSelector"] == {"matchLabels": PROMETHEUS_POD}


def test_no_service_is_exposed_outside_the_cluster(k8s_docs):
    for svc in by_kind(k8s_docs, "Service"):
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", svc["metadata"]["name"]
        assert not svc["spec"].get("externalIPs"), svc["metadata"]["name"]
    assert not by_kind(k8s_docs, "Ingress")


def rendered(tmp_path: Path, components: list[str]) -> list[dict]:
    """``kubectl kustomize`` of the base with these components (an overlay outside the base, as kustomize demands)."""
    base = tmp_path / "k8s"
    shutil.copytree(K8S, base)
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": ["../k8s"],
        "components": [f"../k8s/{c}" for c in components]}))
    out = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl (kustomize)")
@pytest.mark.parametrize("components, secure", [([], False), (["kafka-security"], True)])
def test_the_kafka_secret_is_required_once_the_configmap_names_a_secure_protocol(tmp_path, components, secure):
    """Issue 27 #5: the Secret was mounted `optional: true` whatever the protocol, so a missing one went unnoticed."""
    from dreamstream.kafka.security import unused_settings

    docs = rendered(tmp_path, components)
    (config,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "dreamstream-settings"]
    fields = {k.removeprefix("DREAMSTREAM_").lower(): v for k, v in config["data"].items()}
    settings = Settings(**fields)
    assert (settings.kafka_security_protocol != "PLAINTEXT") is secure
    assert not unused_settings(settings), "the ConfigMap's security settings must be all or nothing"
    volumes = [v for d in docs if d["kind"] in WORKLOADS for v in pod_spec(d).get("volumes", [])
               if v.get("secret", {}).get("secretName") == KAFKA_SECRET]
    assert len(volumes) == 3 and all(v["secret"].get("optional") is (not secure) for v in volumes), volumes
