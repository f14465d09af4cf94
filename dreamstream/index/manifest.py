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

MANIFEST = "manifest.json"


class IndexCorruptError(RuntimeError):
    """A version's file does not match its manifest (missing, or wrong checksum)."""


@dataclass(frozen=True)
class ShardEntry:
    """One shard of a version: its files, size, checksums and the recall measured when built."""

    file: str
    ids: str
    count: int
    sha256: str
    ids_sha256: str
    kind: str  # "flat" | "ivf" (IVF-Flat) | "empty" | a compressed kind of dreamstream.index.compressed
    recall: float
    nprobe: int = 0
    vectors: str = ""  # compressed shards: the float32 vectors file re-ranking reads (memory-mapped)
    vectors_sha256: str = ""
    short_list: int = 0  # compressed shards: candidates per wanted item re-ranked exactly


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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Manifest":
        fields = dict(data)
        fields["shards"] = [ShardEntry(**s) for s in data["shards"]]
        return cls(**fields)




def write_bytes_synced(path: Path, data: bytes) -> None:
    """Write a file and fsync it, so a crash never leaves a published file half written."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    """fsync a directory so the names created in it survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(folder: Path, manifest: Manifest) -> None:
    write_bytes_synced(folder / MANIFEST, json.dumps(manifest.to_json(), indent=1).encode("utf-8"))


def read_manifest(folder: Path) -> Manifest:
    """Read a version's manifest; a missing or unreadable one is a corrupt version."""
    path = folder / MANIFEST
    try:
        return Manifest.from_json(json.loads(path.read_text("utf-8")))
    except FileNotFoundError:
        raise IndexCorruptError(f"{path} is missing: the version folder is incomplete") from None
    except (ValueError, TypeError, KeyError) as err:
        raise IndexCorruptError(f"{path} is not a valid manifest ({err}); rebuild the index") from None


def read_verified(path: Path, expected_sha256: str) -> bytes:
    """A file's bytes, after checking them against the manifest's sha256."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IndexCorruptError(f"{path} is missing although the manifest lists it") from None
    actual = sha256_bytes(data)
    if actual != expected_sha256:
        raise IndexCorruptError(
            f"{path} is corrupt: sha256 {actual[:16]}... does not match the manifest's {expected_sha256[:16]}...; "
            "the previous version keeps serving; rebuild or republish the index"
        )
    return data
