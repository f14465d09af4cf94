"""infra/docker-compose.yml, Dockerfile and prometheus.yml, checked without Docker."""
from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from dreamstream.settings import Settings
from dreamstream.settings_doc import documented_variables

INFRA = Path(__file__).resolve().parents[2] / "infra"
REPO = INFRA.parent
DREAMSTREAM_SERVICES = ("topics", "worker", "indexer", "tools")


def settings_from_env(env: dict) -> Settings:
    """Settings as a container with this environment would build them (validates every value)."""
    fields = {k.removeprefix("DREAMSTREAM_").lower(): v for k, v in env.items() if k.startswith("DREAMSTREAM_")}
    unknown = set(fields) - set(Settings.model_fields)
    assert not unknown, f"not settings: {sorted(unknown)}"
    return Settings(**fields)


def test_every_yaml_file_parses():
    files = sorted(INFRA.rglob("*.yml")) + sorted(INFRA.rglob("*.yaml"))
    assert len(files) >= 8
    for path in files:
        assert list(yaml.safe_load_all(path.read_text())), path


def test_compose_matches_the_compose_spec_schema(compose):
    """The compose-spec JSON schema is what `docker compose config` validates against.

    Compose v2 (the `docker compose` plugin) installs from neither Debian, PyPI nor npm,
    and Debian's docker-compose 1.29 rejects the spec's top-level `name`, so the schema,
    strict about unknown keys, is the check CI can always run.
    """
    vendor = pytest.importorskip("check_jsonschema.builtin_schemas.vendor",
                                 reason="check-jsonschema (test extra) carries the compose-spec schema")
    schema = json.loads((Path(vendor.__file__).parent / "compose-spec.json").read_text())
    jsonschema.validate(compose, schema)
    bad = dict(compose, services={"worker": {"image": "x", "deploy": {"replica": 2}}})
    with pytest.raises(jsonschema.ValidationError):  # the schema is strict enough to catch a typo
        jsonschema.validate(bad, schema)



def test_compose_runs_real_kafka_in_kraft_mode(compose):
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "ZOOKEEPER" not in " ".join(env)
    assert "healthcheck" in kafka and any(v.endswith(":/var/lib/kafka/data") for v in kafka["volumes"])
    broker = settings_from_env(compose["services"]["worker"]["environment"]).broker
    host, port = broker.split("://")[1].split(":")
    assert host == "kafka" and f"PLAINTEXT://{host}:{port}" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_compose_services_and_ordering(compose):
    services = compose["services"]
    assert {"kafka", "topics", "worker", "indexer", "prometheus"} <= set(services)
    for name in DREAMSTREAM_SERVICES:
        svc = services[name]
        assert svc["build"]["dockerfile"] == "infra/Dockerfile" and (INFRA / svc["build"]["context"]).resolve() == REPO
    assert services["topics"]["command"] == ["topics"]
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("worker", "indexer"):
        assert services[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert services[name]["command"] == [name]


def test_worker_is_scalable_with_rocksdb_state_on_a_volume(compose):
    worker = compose["services"]["worker"]
    assert worker["deploy"]["replicas"] >= 2
    assert "container_name" not in worker and "ports" not in worker  # both would stop --scale worker=N
    settings = settings_from_env(worker["environment"])
    assert settings.store == "rocksdb://"
    assert settings.web_bind == "0.0.0.0" and settings.web_port > 0
    assert settings.partitions >= worker["deploy"]["replicas"]
    mounts = [v.split(":") for v in worker["volumes"]]
    assert [str(settings.state_dir)] in mounts, "state needs a per-replica (anonymous) volume"
    assert [m for m in mounts if len(m) == 3 and m[1] == str(settings.model_dir) and m[2] == "ro"]


def test_indexer_keeps_its_index_on_a_named_volume(compose):
    indexer = compose["services"]["indexer"]
    settings = settings_from_env(indexer["environment"])
    assert settings.metrics_port > 0
    assert settings.web_bind == "0.0.0.0", "Prometheus scrapes the indexer over the compose network"
    named = {v.split(":")[0]: v.split(":")[1] for v in indexer["volumes"]}
    assert named["index"] == str(settings.index_dir) and "index" in compose["volumes"]
    tools_index = [v for v in compose["services"]["tools"]["volumes"] if v.startswith("index:")]
    assert tools_index and tools_index[0].endswith(":ro")


def test_prometheus_scrapes_the_ports_the_settings_use(compose):
    prom = compose["services"]["prometheus"]
    config_mount = next(v for v in prom["volumes"] if v.endswith("/etc/prometheus/prometheus.yml:ro"))
    config = yaml.safe_load((INFRA / config_mount.split(":")[0]).read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker = settings_from_env(compose["services"]["worker"]["environment"])
    indexer = settings_from_env(compose["services"]["indexer"]["environment"])
    sd = jobs["dreamstream-worker"]["dns_sd_configs"][0]
    assert sd["names"] == ["worker"] and sd["port"] == worker.web_port
    assert jobs["dreamstream-indexer"]["static_configs"][0]["targets"] == [f"indexer:{indexer.metrics_port}"]
    for job in ("dreamstream-worker", "dreamstream-indexer"):
        assert jobs[job]["metrics_path"] == "/metrics"


def test_every_dreamstream_variable_in_infra_is_a_setting_or_documented():
    used = set()
    for path in INFRA.rglob("*"):
        if path.is_file():
            used |= set(re.findall(r"DREAMSTREAM_[A-Z0-9_]+", path.read_text()))
    assert used, "infra/ sets no DREAMSTREAM_* variable at all?"
    undocumented = used - documented_variables()
    assert not undocumented, f"{sorted(undocumented)} are neither Settings fields nor in docs/settings.md"


def test_dockerfile_installs_the_package_without_training_deps():
    text = (INFRA / "Dockerfile").read_text()
    installs = re.findall(r"pip install ([^&\n]+)", text)
    assert installs and all("train" not in line and "torch" not in line for line in installs)
    assert any("rocksdb" in line for line in installs)
    for source in re.findall(r"^COPY (\S+)", text, flags=re.M):
        assert (REPO / source).exists(), f"Dockerfile copies {source}, which is not in the repository"
    env = dict(re.findall(r"(DREAMSTREAM_[A-Z_]+)=(\S+)", text))
    settings_from_env(env)
    assert re.search(r'^ENTRYPOINT \["dreamstream"\]', text, flags=re.M)


def published(service: dict) -> list[tuple[str | None, str, str]]:
    """(host address, host port, container port) of each published port, short or long syntax."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((port.get("host_ip"), str(port.get("published")), str(port["target"])))
        else:
            parts = str(port).rsplit("/", 1)[0].split(":")
            out.append((parts[0] if len(parts) == 3 else None, parts[-2] if len(parts) > 1 else "", parts[-1]))
    return out


def test_published_ports_listen_on_the_hosts_loopback_only(compose):
    ports = {name: published(svc) for name, svc in compose["services"].items()}
    assert ports["kafka"] == [("127.0.0.1", "9094", "9094")]  # the plaintext HOST listener
    assert ports["prometheus"] == [("127.0.0.1", "9090", "9090")]
    for name, entries in ports.items():
        for host_ip, host_port, _ in entries:
            assert host_ip == "127.0.0.1", f"{name} publishes {host_port} on every interface"
            assert host_port, f"{name}: a random host port still needs an address"
    for name in ("worker", "indexer"):
        assert not ports[name] and compose["services"][name]["expose"], f"{name}'s metrics stay on the compose network"
    kafka_env = compose["services"]["kafka"]["environment"]
    assert "HOST://localhost:9094" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]


def test_the_loopback_check_reads_both_port_syntaxes():
    assert published({"ports": ["9094:9094", "127.0.0.1:1:2/tcp", {"target": 3, "published": 4, "host_ip": "::1"}]}) == [
        (None, "9094", "9094"), ("127.0.0.1", "1", "2"), ("::1", "4", "3")]
