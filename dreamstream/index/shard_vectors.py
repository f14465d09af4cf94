"""A shard's exact float32 vectors as a file of the version, memory-mapped by readers.

Why a file and not RAM: a compressed shard's codes are ~16 bytes per item
but re-ranking its short list exactly needs the 256-byte vectors (D=64) of
a few hundred rows per query. Memory-mapped, they live in the page cache,
shared by every ranking process on the host and evictable, instead of in
each process's heap. The file is written, fsynced and checksummed with the
rest of the version before the rename that publishes it, so it is exactly
as atomic as the shard it belongs to; row i is the vector of Faiss id i.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from dreamstream.checksums import sha256_file
from dreamstream.index.manifest import IndexCorruptError


def write_vectors(path: Path, vectors: np.ndarray) -> str:
    """Write ``vectors`` [n, D] as little-endian float32 rows, fsynced; returns the file's sha256."""
    data = np.ascontiguousarray(vectors, dtype="<f4")
    view = memoryview(data).cast("B")  # no copy of a matrix that can be gigabytes
    with open(path, "wb") as fh:
        fh.write(view)
        fh.flush()
        os.fsync(fh.fileno())
    return hashlib.sha256(view).hexdigest()


def open_vectors(path: Path, count: int, dim: int, expected_sha256: str) -> np.ndarray:
    """The verified vectors file, memory-mapped read-only as [count, dim] float32.

    The checksum streams the file once (which also warms the page cache);
    a wrong size or sha256 is a corrupt version, refused like a bad shard.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise IndexCorruptError(f"{path} is missing although the manifest lists it") from None
    if size != 4 * count * dim:
        raise IndexCorruptError(f"{path} is {size} bytes, the manifest's {count} x {dim} float32 vectors are {4 * count * dim}")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise IndexCorruptError(f"{path} is corrupt: sha256 {actual[:16]}... does not match the manifest's "
                                f"{expected_sha256[:16]}...; the previous version keeps serving")
    if count == 0:
        return np.zeros((0, dim), np.float32)
    return np.memmap(path, dtype="<f4", mode="r", shape=(count, dim))
