"""Issue 27, finding 10: interests per record capped at the bundle's K; PID files checked before any signal.

(The refused bundle retried when its files change is in
``tests/streams/test_hostile_inputs.py``: it needs an exported bundle.)
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dreamstream import codec
from dreamstream.client import MAX_INTERESTS, Retriever, rank
from dreamstream.index.builder import BuildParams, build_version
from dreamstream.index.publish import install
from dreamstream.index.store import ItemStore
from dreamstream.processes.pid_file import command_line, owned_pid, write_pid_file
from dreamstream.settings import Settings

D, K = 8, 4


def published(tmp_path: Path, interests: int) -> Retriever:
    store = ItemStore(shards=2)
    store.put_many([f"i{n}" for n in range(200)], np.random.default_rng(0).standard_normal((200, D)))
    install(build_version(store, tmp_path, BuildParams(), interests=interests), tmp_path)
    return Retriever(tmp_path, follow=False)


def record(interests: int) -> dict:
    rng = np.random.default_rng(1)
    return {"vector": codec.vec_to_bin(rng.standard_normal(D).astype(np.float32)),
            "interests": codec.vec_to_bin(rng.standard_normal((interests, D)).astype(np.float32)),
            "interest_weights": [1.0 / max(1, interests)] * interests}


def test_a_record_with_more_interests_than_the_bundles_k_is_refused_before_it_is_ranked(tmp_path: Path) -> None:
    """On main a 1 MB record (32,000 interests at D=8) was ranked: 70x the time of a normal one."""
    retriever = published(tmp_path, interests=K)
    assert retriever.version.manifest.interests == K
    assert len(retriever.search(record(K), 5)) == 5
    started = time.perf_counter()
    with pytest.raises(ValueError, match=f"more than {K}"):
        retriever.search(record(32_000), 5)
    assert time.perf_counter() - started < 0.5  # refused on its length, not after decoding and searching it
    with pytest.raises(ValueError, match=f"more than {K}"):
        rank(retriever.version, {**record(0), "interests": [[0.5] * D] * (K + 1)}, 5)  # a list of lists too


def test_a_version_that_does_not_know_its_k_caps_at_the_default(tmp_path: Path) -> None:
    retriever = published(tmp_path, interests=0)
    assert len(retriever.search(record(MAX_INTERESTS), 5)) == 5
    with pytest.raises(ValueError, match="bundle's limit"):
        retriever.search(record(MAX_INTERESTS + 1), 5)


def test_the_indexer_writes_the_bundles_k_into_its_versions(tmp_path: Path) -> None:
    from dreamstream.index.service import bundle_interests

    bundle = tmp_path / "models" / "v20260101-000000"
    bundle.mkdir(parents=True)
    (bundle / "manifest.json").write_text(json.dumps({
        "version": bundle.name, "dim": D, "interests": 6, "hidden": 8, "tau": 1.0, "opset": 17, "text_dim": 2,
        "visual_dim": 2, "files": {}}))
    assert bundle_interests(Settings(model_dir=tmp_path / "models")) == 6
    assert bundle_interests(Settings(model_dir=tmp_path / "models", namespace=bundle.name)) == 6
    assert bundle_interests(Settings(model_dir=tmp_path / "none")) == 0


@pytest.fixture
def stranger():
    """An unrelated process (what a stale PID file can name after a reboot)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def test_a_stale_pid_file_naming_another_process_is_never_signalled(tmp_path: Path, stranger) -> None:
    from dreamstream import rollout

    settings = Settings(state_dir=tmp_path / "state")
    folder = rollout.rollout_dir(settings, "v2")
    folder.mkdir(parents=True)
    (folder / "worker.pid").write_text(str(stranger.pid))  # the older format: a number alone
    (folder / "indexer.pid").write_text(json.dumps({"pid": stranger.pid, "argv": ["dreamstream", "indexer"],
                                                    "start": 1}))  # a record of another process with this PID
    assert owned_pid(folder / "worker.pid", "worker") is None and owned_pid(folder / "indexer.pid", "indexer") is None
    assert rollout.stop_spawned(settings, "v2", timeout_s=1) == []
    time.sleep(0.2)
    assert stranger.poll() is None, "an unrelated process was signalled"
    assert not (folder / "worker.pid").exists()  # stale files are cleared


def test_a_pid_file_of_the_process_it_names_is_honoured(tmp_path: Path, stranger) -> None:
    from dreamstream import rollout

    settings = Settings(state_dir=tmp_path / "state")
    folder = rollout.rollout_dir(settings, "v2")
    folder.mkdir(parents=True)
    write_pid_file(folder / "worker.pid", stranger.pid)
    record_ = json.loads((folder / "worker.pid").read_text())
    assert record_["argv"] == command_line(stranger.pid) and record_["start"] is not None
    assert owned_pid(folder / "worker.pid", "worker") == stranger.pid
    assert rollout.stop_spawned(settings, "v2", timeout_s=10) == ["worker"]
    assert stranger.wait(timeout=10) is not None
