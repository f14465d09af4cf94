"""docs/: the AsyncAPI document against the topics and the real encoders, and settings.md freshness."""
from __future__ import annotations

from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml

from dreamstream import codec
from dreamstream.settings import Settings
from dreamstream.settings_doc import render_markdown
from dreamstream.topics import (COMPACT, DLQ, INDEX_VERSIONS, ITEM_FEATURES, ITEM_VECTORS, ITEM_WATCHERS,
                                USER_EMBEDDINGS, WATCH_EVENTS, topic_specs)

DOCS = Path(__file__).resolve().parents[2] / "docs"

# the value fields of each topic, as DESIGN.md's topic table fixes them
DESIGN_FIELDS = {
    WATCH_EVENTS: {"user", "video", "ts", "watch_ms", "duration_ms", "kind"},
    ITEM_FEATURES: {"video", "text", "visual", "ts"},
    ITEM_VECTORS: {"video", "vector", "model", "ts", "live"},  # live: ours (docs/topics.md), optional
    USER_EMBEDDINGS: {"user", "seq", "ts", "model", "vector", "interests", "interest_ids", "interest_weights", "cold"},
    DLQ: {"reason", "topic", "partition", "offset", "key", "value"},
    INDEX_VERSIONS: {"version", "path", "shards", "items", "built_at", "recall"},
}


@pytest.fixture(scope="module")
def asyncapi() -> dict:
    return yaml.safe_load((DOCS / "asyncapi.yaml").read_text())


def deref(doc: dict, ref: str) -> dict:
    node = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def payload_schema(doc: dict, channel: str) -> dict:
    """The channel's payload schema with every #/components ref inlined (for jsonschema)."""
    ops = doc["channels"][channel]
    message = deref(doc, next(op["message"]["$ref"] for k, op in ops.items() if k in ("publish", "subscribe")))
    return {**message["payload"], "components": doc["components"]}


def object_schema(doc: dict, channel: str) -> dict:
    payload = deref(doc, "#/components/messages/" + next(
        op["message"]["$ref"].rsplit("/", 1)[1] for k, op in doc["channels"][channel].items() if k in ("publish", "subscribe")))["payload"]
    if "oneOf" in payload:
        payload = payload["oneOf"][0]
    return deref(doc, payload["$ref"])


def jsonable(value):
    """msgpack bin -> a string, as the document describes bin (type string, format binary)."""
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def test_every_topic_is_a_channel_with_its_compaction(asyncapi):
    assert asyncapi["asyncapi"].startswith("2.6")
    specs = {spec.name: spec for spec in topic_specs(Settings())}
    assert set(asyncapi["channels"]) == set(specs)
    for name, spec in specs.items():
        kafka = asyncapi["channels"][name]["bindings"]["kafka"]
        compacted = kafka.get("topicConfiguration", {}).get("cleanup.policy") == ["compact"]
        assert compacted == (spec.configs == COMPACT), name


def test_payload_schemas_have_the_design_fields(asyncapi):
    for channel, fields in DESIGN_FIELDS.items():
        schema = object_schema(asyncapi, channel)
        assert set(schema["properties"]) == fields, channel
        assert set(schema["required"]) == fields - {"kind", "live"}, channel


def test_what_the_code_writes_validates_against_the_document(asyncapi, tmp_path):
    from streams.domain.records import user_record

    vec = np.ones(4, np.float32) / 2
    samples = {
        DLQ: codec.dead_letter("unknown video", "watch-events", 0, 5, b"u1", b"\x80"),
        ITEM_VECTORS: codec.item_vector_record("v1", vec, "m1", 1),
        USER_EMBEDDINGS: codec.unpack(user_record("u1", 3, 10, "m1", vec, np.stack([vec, vec]), np.array([0.5, 0.5]), False)),
        WATCH_EVENTS: {"user": "u1", "video": 7, "ts": 1, "watch_ms": 100, "duration_ms": 200, "kind": "impression"},
        ITEM_FEATURES: {"video": "v1", "text": codec.vec_to_bin(vec), "visual": codec.vec_to_bin(vec), "ts": 1},
        INDEX_VERSIONS: {"version": "v-1", "path": "/x", "shards": 4, "items": 10, "built_at": 1.5, "recall": 0.99},
    }
    for channel, value in samples.items():
        jsonschema.validate(jsonable(value), payload_schema(asyncapi, channel))
    jsonschema.validate([samples[WATCH_EVENTS]], payload_schema(asyncapi, WATCH_EVENTS))  # a client's batch
    jsonschema.validate(None, payload_schema(asyncapi, ITEM_VECTORS))  # tombstone
    jsonschema.validate(jsonable(codec.item_vector_record("v1", vec, "m1", 1, live=True)),
                        payload_schema(asyncapi, ITEM_VECTORS))
    for value in (codec.watcher_record("v1", vec, 0.5, "m1", 2, 40, 0, 1), codec.tower_record("v1", vec, "m1", 1)):
        jsonschema.validate(jsonable(value), payload_schema(asyncapi, ITEM_WATCHERS))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(jsonable({**codec.watcher_record("v1", vec, 0.5, "m1", 2, 40, 0, 1), "src": [1]}),
                            payload_schema(asyncapi, ITEM_WATCHERS))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"user": "u1", "video": 1, "ts": 1}, payload_schema(asyncapi, WATCH_EVENTS))


def test_replayed_events_validate_against_the_document(asyncapi, tmp_path):
    from dreamstream.data.recbole import load_dataset
    from dreamstream.replay import event_values, select_rows

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "d.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                            "a\tx\t1\t10\nb\ty\t0\t5\n")
    ds = load_dataset(tmp_path / "d")
    for _, value, _ in event_values(ds, select_rows(ds)):
        jsonschema.validate(codec.unpack(value), payload_schema(asyncapi, WATCH_EVENTS))


def test_settings_doc_is_up_to_date():
    assert (DOCS / "settings.md").read_text() == render_markdown(), (
        "docs/settings.md is stale: run `.venv/bin/python -m dreamstream.settings_doc > docs/settings.md`")


def test_every_variable_named_in_the_docs_exists():
    import re

    from dreamstream.settings_doc import documented_variables

    named = set()
    for path in DOCS.glob("*.md"):
        named |= set(re.findall(r"DREAMSTREAM_[A-Z0-9_]*[A-Z0-9]", path.read_text()))
    assert not named - documented_variables(), sorted(named - documented_variables())


def test_production_doc_covers_what_an_operator_needs():
    text = (DOCS / "production.md").read_text()
    for needle in ("DREAMSTREAM_BROKER=kafka://", "min.insync.replicas", "rocksdb://", "dreamstream[rocksdb]",
                   "table_standby_replicas", "broker_session_timeout", "publish-items", "hot-reload",
                   "cleanup.policy=compact"):
        assert needle in text, needle
