"""Issue 27, finding 7: one namespace check everywhere, and ``rollout retire`` deletes only what it proves is a namespace.

On main ``rollout retire v20260101T000000.000001Z`` (a version name, as
``rollout status`` prints them) exited 0 and deleted the default
namespace's serving index version, and ``.``, ``..``, ``.building-*``,
``CURRENT`` and ``SERVING`` passed as namespace names.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydantic
import pytest
from click.testing import CliRunner

from dreamstream.cli import main
from dreamstream.client import Retriever
from dreamstream.index.builder import BuildParams, build_version
from dreamstream.index.layout import InvalidNamespace, check_namespace
from dreamstream.index.publish import install, read_current
from dreamstream.index.store import ItemStore
from dreamstream.serving import namespace_dir, read_serving, switch_serving
from dreamstream.settings import Settings

BAD = [".", "..", ".building-v20260101T000000.000001Z", ".hidden", "CURRENT", "SERVING", "serving", "HISTORY.json",
       "MONITOR.json", "manifest.json", "v20260101T000000.000001Z", "V20260101T000000.000001z", "a/b", "../x", "-x",
       "x" * 81, "a b", "é"]
GOOD = ["", "v20261123-190312", "v20261123-190312-2", "exp.1", "A_b-c"]


@pytest.mark.parametrize("name", BAD)
def test_every_entry_point_refuses_a_name_that_is_not_a_namespace(name: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidNamespace):
        check_namespace(name)
    with pytest.raises(pydantic.ValidationError):
        Settings(namespace=name)
    with pytest.raises(InvalidNamespace):
        Settings().in_namespace(name)  # model_copy does not validate: in_namespace must
    with pytest.raises(InvalidNamespace):
        namespace_dir(tmp_path, name)  # the client, the monitor and the indexer reach folders through it
    with pytest.raises(InvalidNamespace):
        switch_serving(tmp_path, name)
    assert not (tmp_path / "SERVING").exists()


@pytest.mark.parametrize("name", GOOD)
def test_bundle_version_names_are_namespaces(name: str) -> None:
    assert check_namespace(name) == name
    assert Settings(namespace=name).in_namespace(name).namespace == name


def publish(folder: Path, space: str, seed: int = 0) -> str:
    store = ItemStore(shards=1)
    store.put_many([f"i{k}" for k in range(30)], np.random.default_rng(seed).standard_normal((30, 8)))
    built = build_version(store, folder, BuildParams(), space=space)
    install(built, folder)
    return built.manifest.version


def retire(tmp_path: Path, name: str):
    return CliRunner().invoke(main, ["rollout", "retire", name, "--index-dir", str(tmp_path / "index"),
                                     "--state-dir", str(tmp_path / "state")])


def test_retiring_an_index_version_name_is_refused_and_the_version_keeps_serving(tmp_path: Path) -> None:
    index = tmp_path / "index"
    version = publish(index, "")
    result = retire(tmp_path, version)
    assert result.exit_code == 1 and "index version name" in result.output
    assert (index / version).is_dir() and read_current(index) == version
    assert Retriever(index, follow=False).version.name == version


def test_retire_removes_only_a_proven_namespace_never_the_serving_or_previous_one(tmp_path: Path) -> None:
    index = tmp_path / "index"
    publish(index, "")
    publish(index / "v2", "v2", 1)
    publish(index / "v3", "v3", 2)
    (index / "stray").mkdir()
    (index / "stray" / "notes.txt").write_text("not an index")
    mislabelled = index / "v4"
    publish(mislabelled, "v9", 3)  # a folder whose versions were built for another namespace

    assert retire(tmp_path, "stray").exit_code == 1 and (index / "stray" / "notes.txt").exists()
    assert retire(tmp_path, "v4").exit_code == 1 and mislabelled.is_dir()
    assert retire(tmp_path, "").exit_code != 0
    switch_serving(index, "v2")
    assert retire(tmp_path, "v2").exit_code == 1 and (index / "v2").is_dir()  # serving
    assert retire(tmp_path, "").exit_code != 0 and read_current(index) is not None  # previous (and default)

    done = retire(tmp_path, "v3")  # proven by the manifest's space
    assert done.exit_code == 0, done.output
    assert not (index / "v3").exists() and (index / "v2").is_dir() and read_current(index) is not None

    (tmp_path / "state" / "rollout" / "v5").mkdir(parents=True)  # proven by its rollout record, no index yet
    assert retire(tmp_path, "v5").exit_code == 0
    assert read_serving(index).namespace == "v2"
