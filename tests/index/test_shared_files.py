"""Issue 27, finding 6: every reader of the index volume's shared files survives each hostile shape of them.

On main each case below raised something other than the index's own
corruption error (``UnicodeDecodeError``, ``IsADirectoryError``,
``AttributeError``, ``TypeError``, Faiss' ``RuntimeError``): the monitor
exited, the client re-read and re-hashed the version at every check without
refusing it, and the indexer's own manifest read crashed. Each reader is run
against each case: the client (``Retriever.refresh``, which the follower
thread calls), the monitor (``monitored_namespaces``, ``SpaceIndexes``, the
gate) and the indexer (its manifest read, ``prune``, publishing).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import faiss
import numpy as np
import pytest

from dreamstream.bundle import BundleError, read_manifest as read_bundle_manifest
from dreamstream.client import RefusedVersion, Retriever
from dreamstream.index.builder import BuildParams, build_version
from dreamstream.index.manifest import IndexCorruptError, Manifest, read_manifest
from dreamstream.index.publish import install, prune, read_current, read_history
from dreamstream.index.service import current_manifest, publish_version
from dreamstream.index.store import ItemStore
from dreamstream.monitor import MonitorStat, gate, read_monitor, write_monitor
from dreamstream.monitor_service import SpaceIndexes, monitored_namespaces

DIM = 8


def store_of(n: int = 60, seed: int = 0) -> tuple[ItemStore, np.ndarray]:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    store = ItemStore(shards=2)
    store.put_many([f"i{k}" for k in range(n)], x)
    return store, x


def replace(path: Path, data: bytes | None) -> None:
    """Put ``data`` at ``path`` (None: a folder), whatever was there."""
    if path.is_dir():
        path.rmdir()
    else:
        path.unlink(missing_ok=True)
    if data is None:
        path.mkdir()
    else:
        path.write_bytes(data)


def new_version(mutate: Callable[[Path, dict], None]) -> Callable[[Path], None]:
    """A case: a new version is built, ``mutate(folder, manifest json)`` edits it, checksums follow, it becomes CURRENT.

    The checksums are rewritten to match, as a hostile or buggy writer
    would: the shape checks, not the checksum, must catch it.
    """
    def apply(index_dir: Path) -> None:
        store, _ = store_of(seed=1)
        built = build_version(store, index_dir, BuildParams())
        data = built.manifest.to_json()
        mutate(built.folder, data)
        for shard in data.get("shards", []) if isinstance(data, dict) else []:
            if isinstance(shard, dict) and isinstance(shard.get("file"), str) and (built.folder / shard["file"]).is_file():
                shard["sha256"] = hashlib.sha256((built.folder / shard["file"]).read_bytes()).hexdigest()
                shard["ids_sha256"] = hashlib.sha256((built.folder / shard["ids"]).read_bytes()).hexdigest()
        if not (built.folder / "manifest.json").is_dir() and data is not None:
            raw = data.pop("__raw__", None) if isinstance(data, dict) else None
            (built.folder / "manifest.json").write_bytes(raw if raw is not None else json.dumps(data).encode())
        install(built, index_dir)
    return apply


def manifest_bytes(raw: bytes) -> Callable[[Path, dict], None]:
    def mutate(folder: Path, data: dict) -> None:
        data["__raw__"] = raw
    return mutate


def shard_field(name: str, value: object) -> Callable[[Path, dict], None]:
    def mutate(folder: Path, data: dict) -> None:
        data["shards"][0][name] = value
    return mutate


def shard_bytes(which: str, payload: bytes) -> Callable[[Path, dict], None]:
    def mutate(folder: Path, data: dict) -> None:
        (folder / data["shards"][0][which]).write_bytes(payload)
    return mutate


def other_width_shard(folder: Path, data: dict) -> None:
    index = faiss.IndexFlatIP(DIM + 1)
    index.add(np.ones((data["shards"][0]["count"], DIM + 1), np.float32))
    (folder / data["shards"][0]["file"]).write_bytes(faiss.serialize_index(index).tobytes())


HOSTILE: dict[str, Callable[[Path], None]] = {
    "CURRENT not UTF-8": lambda d: replace(d / "CURRENT", b"\xff\xfe\x00v\n"),
    "CURRENT a folder": lambda d: replace(d / "CURRENT", None),
    "CURRENT a path": lambda d: replace(d / "CURRENT", b"../../etc\n"),
    "CURRENT a FIFO": lambda d: (replace(d / "CURRENT", b""), (d / "CURRENT").unlink(), os.mkfifo(d / "CURRENT")),
    "CURRENT 20 MB": lambda d: replace(d / "CURRENT", b"v" * (20 << 20)),
    "SERVING []": lambda d: replace(d / "SERVING", b"[]"),
    "SERVING null": lambda d: replace(d / "SERVING", b"null"),
    "SERVING namespace a number": lambda d: replace(d / "SERVING", b'{"namespace": 5}'),
    "SERVING previous a list": lambda d: replace(d / "SERVING", b'{"namespace": "", "previous": ["a"]}'),
    "SERVING since text": lambda d: replace(d / "SERVING", b'{"namespace": "", "since": "soon"}'),
    "SERVING names CURRENT": lambda d: replace(d / "SERVING", b'{"namespace": "CURRENT"}'),
    "SERVING names ..": lambda d: replace(d / "SERVING", b'{"namespace": ".."}'),
    "SERVING not UTF-8": lambda d: replace(d / "SERVING", b'{"namespace": "\xff"}'),
    "SERVING a folder": lambda d: replace(d / "SERVING", None),
    "manifest []": new_version(manifest_bytes(b"[]")),
    "manifest not UTF-8": new_version(manifest_bytes(b"\xff{}")),
    "manifest a folder": new_version(lambda f, m: replace(f / "manifest.json", None)),
    "manifest shards a list of lists": new_version(lambda f, m: m.update(shards=[[1, 2], [3]])),
    "manifest dim text": new_version(lambda f, m: m.update(dim="8")),
    "manifest count negative": new_version(shard_field("count", -1)),
    "manifest file a number": new_version(shard_field("file", 7)),
    "manifest file outside": new_version(shard_field("file", "../../x.faiss")),
    "manifest names another version": new_version(lambda f, m: m.update(version="v20000101T000000.000000Z")),
    "shard bytes not Faiss": new_version(shard_bytes("file", b"not a faiss index at all")),
    "shard of another width": new_version(other_width_shard),
    "id list of lists": new_version(shard_bytes("ids", json.dumps([[str(i)] for i in range(40)]).encode())),
    "id list of numbers": new_version(shard_bytes("ids", json.dumps(list(range(40))).encode())),
    "id list not JSON": new_version(shard_bytes("ids", b"\xff\xfe[")),
    "id list a map": new_version(shard_bytes("ids", b'{"a": 1}')),
}


@pytest.fixture
def serving_dir(tmp_path: Path) -> tuple[Path, np.ndarray]:
    store, x = store_of()
    install(build_version(store, tmp_path, BuildParams()), tmp_path)
    return tmp_path, x


@pytest.mark.parametrize("case", list(HOSTILE))
def test_every_reader_survives_a_hostile_shared_file(serving_dir, case: str) -> None:
    index_dir, x = serving_dir
    retriever = Retriever(index_dir, follow=False)
    served = retriever.version.name
    monitor_indexes = SpaceIndexes(index_dir, [""])
    monitor_indexes.refresh()

    HOSTILE[case](index_dir)

    # the client: refuses with the index's own error, keeps serving the version it has, refuses it once
    for _ in range(2):
        try:
            retriever.refresh()
        except IndexCorruptError:
            pass
    assert retriever.version.name == served
    assert retriever.search_vectors(x[:1], 1)[0][0][0] == "i0"

    # the monitor: starts, reloads and gates without an exception
    assert "" in monitored_namespaces(index_dir)
    monitor_indexes.refresh()
    assert monitor_indexes.versions[""].name == served
    assert gate(index_dir, "", "")[0] is False

    # the indexer: its manifest read, a publish and a prune neither raise nor delete what serves
    assert current_manifest(index_dir) is None or isinstance(current_manifest(index_dir), Manifest)
    store, _ = store_of(seed=2)
    outcome = publish_version(build_version(store, index_dir, BuildParams()), index_dir, 0.0)
    assert outcome.published or "cannot install" in outcome.reason
    prune(index_dir, 0.0)
    assert (index_dir / served).is_dir() or outcome.published


def test_a_refused_version_is_not_read_again_until_its_files_change(serving_dir, monkeypatch) -> None:
    """A corrupt shard is hashed once, not at every check; copying it again (in place) gets it loaded."""
    import dreamstream.client as client

    index_dir, x = serving_dir
    retriever = Retriever(index_dir, follow=False)
    store, _ = store_of(seed=3)
    built = build_version(store, index_dir, BuildParams())
    shard = built.folder / built.manifest.shards[1].file
    good = shard.read_bytes()
    shard.write_bytes(good[:-7] + b"garbage")  # a half-copied shard: wrong checksum
    install(built, index_dir)
    shard = index_dir / built.manifest.version / shard.name

    reads: list[Path] = []
    real = client.read_verified
    monkeypatch.setattr(client, "read_verified", lambda path, sha: (reads.append(path), real(path, sha))[1])
    with pytest.raises(RefusedVersion, match="shard-001.faiss is corrupt"):
        retriever.refresh()
    first = len(reads)
    for _ in range(5):
        retriever.refresh()  # what the follower thread does twice a second
    assert len(reads) == first, "a refused, unchanged version was read again"

    shard.write_bytes(good)  # copied again
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 1_000_000))
    assert retriever.refresh() and retriever.version.name == built.manifest.version


def test_a_refused_current_is_retried_when_it_is_rewritten(serving_dir) -> None:
    index_dir, _ = serving_dir
    retriever = Retriever(index_dir, follow=False)
    name = retriever.version.name
    (index_dir / "CURRENT").write_bytes(b"\xff\n")
    with pytest.raises(RefusedVersion, match="not UTF-8"):
        retriever.refresh()
    retriever.refresh()  # the same refusal is not raised (nor logged) again
    (index_dir / "CURRENT").write_text(name + "\n")
    assert retriever.refresh() and retriever.last_error is None


@pytest.mark.parametrize("raw", [b"[]", b'{"": []}', b'{"": {"events": "9"}}', b'{"": {"events": 1}}', b"\xff",
                                 b'{"": {"events": 1, "hits": 1, "hitrate": "x", "window": 1, "updated_at": 0}}', None])
def test_a_hostile_monitor_status_is_refused_as_corrupt_and_the_gate_says_so(tmp_path: Path, raw: bytes | None) -> None:
    replace(tmp_path / "MONITOR.json", raw)
    with pytest.raises(IndexCorruptError):
        read_monitor(tmp_path)
    ok, why = gate(tmp_path, "v2", "")
    assert not ok and "cannot be read" in why


def test_the_monitor_status_round_trips(tmp_path: Path) -> None:
    stats = {"": MonitorStat(10, 3, 0.3, 10, 1.0, 2), "v2": MonitorStat(0, 0, None, 0, 1.0)}
    write_monitor(tmp_path, stats)
    assert read_monitor(tmp_path) == stats


@pytest.mark.parametrize("raw", [b"[1, 2]", b'{"version": "v"}', b'[{"version": 3, "published_at": 1}]', b"\xff", None])
def test_a_hostile_history_prunes_nothing_and_the_next_publish_rewrites_it(serving_dir, raw: bytes | None) -> None:
    index_dir, _ = serving_dir
    served = read_current(index_dir)
    replace(index_dir / "HISTORY.json", raw)
    with pytest.raises(IndexCorruptError):
        read_history(index_dir)
    assert prune(index_dir, 0.0) == [] and (index_dir / served).is_dir()
    if raw is not None:
        store, _ = store_of(seed=4)
        assert publish_version(build_version(store, index_dir, BuildParams()), index_dir, 0.0).published
        assert [h["version"] for h in read_history(index_dir)] == [read_current(index_dir)]


@pytest.mark.parametrize("edit", [
    lambda m: b"[]", lambda m: b"\xff\xfe", lambda m: json.dumps({**m, "files": []}).encode(),
    lambda m: json.dumps({**m, "files": {"items.npy": "abc"}}).encode(),
    lambda m: json.dumps({**m, "files": {"items.npy": {"sha256": 5}}}).encode(),
    lambda m: json.dumps({**m, "dim": "64"}).encode(), lambda m: json.dumps({**m, "interests": 0}).encode(),
    lambda m: json.dumps({k: v for k, v in m.items() if k != "hidden"}).encode(), lambda m: None,
])
def test_a_hostile_bundle_manifest_is_a_bundle_error(tmp_path: Path, edit) -> None:
    good = {"version": "v20260101-000000", "dim": 8, "interests": 4, "hidden": 16, "tau": 0.5, "opset": 17,
            "text_dim": 4, "visual_dim": 4, "files": {"items.npy": {"sha256": "0" * 64}}}
    read_bundle_manifest_ok = tmp_path / "ok"
    read_bundle_manifest_ok.mkdir()
    (read_bundle_manifest_ok / "manifest.json").write_text(json.dumps(good))
    assert read_bundle_manifest(read_bundle_manifest_ok).interests == 4
    folder = tmp_path / "bad"
    folder.mkdir()
    replace(folder / "manifest.json", edit(good))
    with pytest.raises(BundleError):
        read_bundle_manifest(folder)


def test_the_manifest_parser_reads_what_the_builder_writes(serving_dir) -> None:
    index_dir, _ = serving_dir
    manifest = read_manifest(index_dir / read_current(index_dir))
    assert Manifest.from_json(json.loads(json.dumps(manifest.to_json()))) == manifest
