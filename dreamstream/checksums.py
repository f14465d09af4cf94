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
