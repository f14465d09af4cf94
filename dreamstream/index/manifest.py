"""A version's ``manifest.json``: what it holds and the checksum of every file.

Readers trust nothing in a version folder that the manifest does not vouch
for: each shard's index and id list carry a sha256, checked on load, so a
truncated or corrupted file is refused instead of served.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dreamstream.checksums import sha256_bytes, sha256_file  # noqa: F401  (re-exported)
from dreamstream.index.atomic_file import fsync_dir  # noqa: F401  (re-exported)
from dreamstream.index.layout import MANIFEST
from dreamstream.index.shared_file import IndexCorruptError, field_of, read_bytes, read_json, want  # noqa: F401  (re-exported)

SHARD_KINDS = ("flat", "ivf", "empty")
MAX_SHARD_BYTES = 1 << 40  # shard files are read whole; the manifest checksum, not a size cap, vouches for them


@dataclass(frozen=True)
class ShardEntry:
    """One shard of a version: its files, size, checksums and the recall measured when built."""

    file: str
    ids: str
    count: int
    sha256: str
    ids_sha256: str
    kind: str  # "flat" | "ivf" | "empty"
    recall: float
    nprobe: int = 0

    @classmethod
    def from_json(cls, data: Any, where: str = "shard") -> "ShardEntry":
        """The entry a JSON value describes; :class:`IndexCorruptError` for any other shape."""
        want(data, dict, where)
        kind = field_of(data, "kind", str, where)
        if kind not in SHARD_KINDS:
            raise IndexCorruptError(f"{where} 'kind' must be one of {SHARD_KINDS}, got {kind!r:.40}")
        return cls(file=field_of(data, "file", str, where), ids=field_of(data, "ids", str, where),
                   count=_count(data, "count", where), sha256=field_of(data, "sha256", str, where),
                   ids_sha256=field_of(data, "ids_sha256", str, where), kind=kind,
                   recall=float(field_of(data, "recall", (int, float), where)), nprobe=_count(data, "nprobe", where, 0))


@dataclass(frozen=True)
class Manifest:
    """The description of one index version (see DESIGN.md, "Index layout")."""

    version: str
    dim: int
    metric: str
    shards: list[ShardEntry]
    items: int
    recall: float
    built_at: float
    build_s: float = 0.0
    rebuilt: list[int] = field(default_factory=list)
    space: str = ""  # the model namespace whose item vectors it holds ("" = the default namespace)
    interests: int = 0  # the bundle's K: the most interests a record searched in it may have (0 = not known)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str = "manifest") -> "Manifest":
        """The manifest a JSON value describes; :class:`IndexCorruptError` for any other shape (unknown keys ignored)."""
        want(data, dict, where)
        shards = [ShardEntry.from_json(s, f"{where} shard {n}") for n, s in enumerate(field_of(data, "shards", list, where))]
        return cls(
            version=field_of(data, "version", str, where), dim=_count(data, "dim", where),
            metric=field_of(data, "metric", str, where), shards=shards, items=_count(data, "items", where),
            recall=float(field_of(data, "recall", (int, float), where)),
            built_at=float(field_of(data, "built_at", (int, float), where)),
            build_s=float(field_of(data, "build_s", (int, float), where, 0.0)),
            rebuilt=[want(r, int, f"{where} 'rebuilt'") for r in field_of(data, "rebuilt", list, where, [])],
            space=field_of(data, "space", str, where, ""), interests=_count(data, "interests", where, 0),
        )


def _count(data: dict, name: str, where: str, default: Any = ...) -> int:
    value = field_of(data, name, int, where, default)
    if value < 0:
        raise IndexCorruptError(f"{where} '{name}' must not be negative, got {value}")
    return value


def write_bytes_synced(path: Path, data: bytes) -> None:
    """Write a file and fsync it, so a crash never leaves a published file half written."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_manifest(folder: Path, manifest: Manifest) -> None:
    write_bytes_synced(folder / MANIFEST, json.dumps(manifest.to_json(), indent=1).encode("utf-8"))


def read_manifest(folder: Path) -> Manifest:
    """Read a version's manifest; a missing or unreadable one is a corrupt version."""
    path = Path(folder) / MANIFEST
    try:
        data = read_json(path)
        if data is None:
            raise IndexCorruptError(f"{path} is missing: the version folder is incomplete")
        return Manifest.from_json(data, str(path))
    except IndexCorruptError as err:
        raise IndexCorruptError(f"{err}; the version is refused (rebuild the index)") from None


def read_verified(path: Path, expected_sha256: str) -> bytes:
    """A file's bytes, after checking them against the manifest's sha256."""
    data = read_bytes(path, max_bytes=MAX_SHARD_BYTES)
    if data is None:
        raise IndexCorruptError(f"{path} is missing although the manifest lists it")
    actual = sha256_bytes(data)
    if actual != expected_sha256:
        raise IndexCorruptError(
            f"{path} is corrupt: sha256 {actual[:16]}... does not match the manifest's {expected_sha256[:16]}...; "
            "the previous version keeps serving; rebuild or republish the index"
        )
    return data
