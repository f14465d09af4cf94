"""sha256 of files and bytes: how bundles and index versions prove they are whole.

One implementation for both, so the model bundle check and the index shard
check can never disagree on what a checksum is.
"""
from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 4 MiB blocks (shards and models can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(4 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """The hex sha256 of bytes already in memory."""
    return hashlib.sha256(data).hexdigest()


def inside(folder: Path, name: str) -> Path:
    """``folder / name`` for a file name read from a manifest or pointer; ``ValueError`` when it would leave ``folder``.

    A manifest (a bundle's, an index version's) or ``CURRENT`` is data, and
    data may be hostile: ``../../etc/passwd`` or an absolute path must not
    make a process read (or checksum) a file outside the folder it serves.
    """
    if not isinstance(name, str) or not name or "\x00" in name or Path(name).is_absolute():
        raise ValueError(f"file name {name!r:.100} is empty or absolute")
    folder = Path(folder)
    path = folder / name
    if ".." in Path(name).parts or not path.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"file name {name!r:.100} points outside {folder}")
    return path
