"""infra/alerts.yml: loaded by the compose Prometheus, and every metric it names is one the code exports."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from dreamstream.index.metrics import IndexMetrics
from streams.ops.metrics import WorkerMetrics

INFRA = Path(__file__).resolve().parents[2] / "infra"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported_names() -> set[str]:
    """Every series name the worker and the indexer can expose (labelled families too, before any sample exists)."""
    names = set()
    for registry in (WorkerMetrics().registry, IndexMetrics().registry):
        for family in registry.collect():
            names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    return names


def rules() -> list[dict]:
    groups = yaml.safe_load((INFRA / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_metric_an_alert_names_is_exported() -> None:
    exported = exported_names()
    assert "dreamstream_event_age_seconds_bucket" in exported and "dreamstream_dead_letters_total" in exported
    for rule in rules():
        named = set(re.findall(r"\bdreamstream_[a-z0-9_]+", rule["expr"]))
        assert named or "up{" in rule["expr"], rule
        assert named <= exported, f"{rule['alert']} names {sorted(named - exported)}, which no code exports"


def test_every_alert_says_how_bad_and_what_happened() -> None:
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names)) and len(names) >= 5
    for rule in rules():
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule
        assert rule["annotations"]["summary"], rule
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule


def test_the_compose_prometheus_loads_the_rules() -> None:
    compose = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
    volumes = compose["services"]["prometheus"]["volumes"]
    assert "./alerts.yml:/etc/prometheus/alerts.yml:ro" in volumes
    config = yaml.safe_load((INFRA / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]  # relative to the config file: /etc/prometheus/


def _buckets(instance: str, counts_per_minute: dict[str, int]) -> list[dict]:
    """Series of an event-age histogram whose observations land in the given buckets at a steady rate."""
    series, total = [], 0
    for le in ("0.1", "2.5", "5", "10", "+Inf"):
        total += counts_per_minute.get(le, 0)
        series.append({"series": f'dreamstream_event_age_seconds_bucket{{le="{le}",instance="{instance}"}}',
                       "values": f"0+{total}x40"})
    return series


# (input series, [(minutes, alert, fires)]): each alert fires in the situation it is named after, and only there
SCENARIOS = [
    (_buckets("w1", {"10": 600}), [(5, "DreamstreamEmbeddingsStale", False), (20, "DreamstreamEmbeddingsStale", True)]),
    (_buckets("w2", {"0.1": 600}), [(20, "DreamstreamEmbeddingsStale", False)]),
    ([{"series": 'dreamstream_consumer_lag{partition="0",instance="w1"}', "values": "100000+2000x40"}],
     [(30, "DreamstreamLagGrowing", True)]),
    ([{"series": 'dreamstream_consumer_lag{partition="0",instance="w1"}', "values": "200000x40"}],
     [(30, "DreamstreamLagGrowing", False)]),
    ([{"series": 'dreamstream_index_records_total{kind="upsert",instance="ix"}', "values": "0+10x60"},
      {"series": 'dreamstream_index_versions_total{instance="ix"}', "values": "3x60"}],
     [(40, "DreamstreamIndexNotPublishing", True)]),
    ([{"series": 'dreamstream_index_records_total{kind="upsert",instance="ix"}', "values": "0+10x60"},
      {"series": 'dreamstream_index_versions_total{instance="ix"}', "values": "0+1x60"}],
     [(40, "DreamstreamIndexNotPublishing", False)]),
]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian: apt-get install prometheus)")
def test_promtool_accepts_the_rules_and_each_alert_fires_when_it_should(tmp_path: Path) -> None:
    check = subprocess.run(["promtool", "check", "rules", str(INFRA / "alerts.yml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    by_name = {rule["alert"]: rule for rule in rules()}
    tests = []
    for series, expectations in SCENARIOS:
        checks = [{"eval_time": f"{minutes}m", "alertname": name,
                   "exp_alerts": [{"exp_labels": by_name[name]["labels"],
                                   "exp_annotations": by_name[name]["annotations"]}] if fires else []}
                  for minutes, name, fires in expectations]
        tests.append({"interval": "1m", "input_series": series, "alert_rule_test": checks})
    spec = tmp_path / "alerts_test.yml"
    spec.write_text(yaml.safe_dump({"rule_files": [str(INFRA / "alerts.yml")], "evaluation_interval": "1m",
                                    "tests": tests}))
    run = subprocess.run(["promtool", "test", "rules", str(spec)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
