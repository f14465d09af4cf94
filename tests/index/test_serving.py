"""The SERVING pointer and the client's pairing: a record is only ever searched with an index of its own model namespace."""
from __future__ import annotations

import numpy as np
import pytest

from dreamstream import codec
from dreamstream.client import ModelMismatch, Retriever
from dreamstream.index.builder import BuildParams, build_version
from dreamstream.index.manifest import IndexCorruptError
from dreamstream.index.publish import install
from dreamstream.index.store import ItemStore
from dreamstream.serving import read_serving, switch_serving


def publish_space(index_dir, namespace: str, ids: list[str], vectors: np.ndarray) -> None:
    store = ItemStore(shards=2)
    store.put_many(ids, vectors)
    folder = index_dir / namespace if namespace else index_dir
    install(build_version(store, folder, BuildParams(), space=namespace), folder)


def record(space: str, vector: np.ndarray) -> dict:
    return {"user": "u", "seq": 1, "model": "m", "space": space, "vector": codec.vec_to_bin(vector.astype(np.float32))}


@pytest.fixture
def two_spaces(tmp_path, vectors_factory):
    """Namespace "" holds items a*, namespace "v2" items b* (another space, another width)."""
    old, new = vectors_factory(200, dim=16), vectors_factory(300, dim=8, seed=1)
    publish_space(tmp_path, "", [f"a{i}" for i in range(200)], old)
    publish_space(tmp_path, "v2", [f"b{i}" for i in range(300)], new)
    return tmp_path, old, new


@pytest.fixture
def two_spaces_both(spaces, vectors_factory):
    """``two_spaces`` through each backend (Faiss folders, Milvus collections); SERVING is the index dir's file."""
    old, new = vectors_factory(200, dim=16), vectors_factory(300, dim=8, seed=1)
    spaces.publish("", [f"a{i}" for i in range(200)], old)
    spaces.publish("v2", [f"b{i}" for i in range(300)], new)
    return spaces, old, new


def test_without_a_pointer_the_default_namespace_serves_and_a_record_of_another_space_is_refused(two_spaces_both) -> None:
    spaces, old, new = two_spaces_both
    index_dir = spaces.index_dir
    with Retriever(index_dir, follow=False, backend=spaces.backend()) as r:
        assert read_serving(index_dir).namespace == "" and r.version.manifest.space == ""
        assert all(i.startswith("a") for i, _ in r.search(record("", old[0]), 5))
        with pytest.raises(ModelMismatch, match="'v2'"):
            r.search(record("v2", new[0]), 5)
        assert all(i.startswith("a") for i, _ in r.search({"vector": codec.vec_to_bin(old[1])}, 5))  # legacy: no space


def test_a_switch_moves_readers_and_keeps_the_previous_space_searchable_until_retired(two_spaces_both) -> None:
    spaces, old, new = two_spaces_both
    index_dir = spaces.index_dir
    with Retriever(index_dir, follow=False, backend=spaces.backend()) as r:
        switch_serving(index_dir, "v2")
        assert r.refresh() and r.serving.namespace == "v2" and r.serving.previous == ""
        assert all(i.startswith("b") for i, _ in r.search(record("v2", new[0]), 5))
        assert all(i.startswith("a") for i, _ in r.search(record("", old[0]), 5)), "a record read before the switch"
        switch_serving(index_dir, "")  # rollback
        assert r.refresh() and r.serving.namespace == "" and r.serving.previous == "v2"
        assert all(i.startswith("a") for i, _ in r.search(record("", old[0]), 5))


def test_an_index_built_for_another_namespace_is_refused(spaces, vectors_factory) -> None:
    x = vectors_factory(50, dim=8)
    spaces.publish("v3", [f"x{i}" for i in range(50)], x, space="v9")  # mislabelled
    spaces.publish("", [f"a{i}" for i in range(50)], x)
    switch_serving(spaces.index_dir, "v3")
    with pytest.raises(IndexCorruptError, match="'v9'"):
        Retriever(spaces.index_dir, follow=False, backend=spaces.backend())


def test_a_pointer_naming_a_path_is_refused(tmp_path) -> None:
    (tmp_path / "SERVING").write_text('{"namespace": "../etc"}')
    with pytest.raises(IndexCorruptError, match="is not allowed"):
        read_serving(tmp_path)


def test_a_gated_switch_to_a_worse_namespace_is_refused(two_spaces) -> None:
    import time

    from click.testing import CliRunner

    from dreamstream.cli import main
    from dreamstream.monitor import MonitorStat, write_monitor

    index_dir, _, _ = two_spaces
    now = time.time()
    write_monitor(index_dir, {"": MonitorStat(5000, 1600, 0.32, 5000, now), "v2": MonitorStat(5000, 1400, 0.28, 5000, now)})
    refused = CliRunner().invoke(main, ["rollout", "switch", "v2", "--gate", "0.01", "--index-dir", str(index_dir)])
    assert refused.exit_code == 1 and "not switching to v2" in refused.output and "refused" in refused.output
    assert read_serving(index_dir).namespace == ""
