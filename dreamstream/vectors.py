"""Checking a vector where it enters a process: the right dimension, finite, a sane norm; returned unit length.

Every topic that carries vectors (``item-vectors``, the item tower's output,
``user-embeddings`` at the client) goes through :func:`checked_vector`, so a
NaN, an infinity, an empty or wrong-width vector, or one so large or small
that float32 arithmetic overflows or underflows on it, is refused with a
reason instead of being stored (one NaN item vector made every user who
watched it publish NaN forever) or crashing a process (a 1e20 vector made
the indexer's store raise on every restart: a crash loop on a compacted topic).
"""
from __future__ import annotations

import numpy as np

MIN_NORM = 1e-6  # below: direction lost in float32 noise (a 1e-30 vector normalises to garbage)
MAX_NORM = 1e6   # above: squares overflow float32 in a dot product (1e20 did)


def checked_vector(raw: bytes | bytearray | memoryview | np.ndarray, dim: int | None) -> np.ndarray:
    """float32 [dim] of unit length from ``raw`` (float32 bytes or an array); ``ValueError`` says what is wrong."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        if len(raw) == 0 or len(raw) % 4:
            raise ValueError(f"vector has {len(raw)} bytes, not a whole number of float32s")
        vec = np.frombuffer(bytes(raw), dtype="<f4").astype(np.float32)
    else:
        vec = np.asarray(raw, dtype=np.float32).reshape(-1)
    if dim is not None and vec.size != dim:
        raise ValueError(f"vector is {vec.size}-d, expected {dim}-d")
    if vec.size == 0:
        raise ValueError("vector is empty")
    if not np.isfinite(vec).all():
        raise ValueError("vector has NaN or infinite values")
    norm = float(np.linalg.norm(vec.astype(np.float64)))
    if not MIN_NORM <= norm <= MAX_NORM:
        raise ValueError(f"vector norm {norm:.3g} is outside [{MIN_NORM:g}, {MAX_NORM:g}]")
    return (vec.astype(np.float64) / norm).astype(np.float32)


def checked_rows(matrix: np.ndarray, dim: int | None, what: str) -> np.ndarray:
    """Every row of ``matrix`` through :func:`checked_vector`; the error names the row and ``what``."""
    rows = np.asarray(matrix, dtype=np.float32)
    out = np.empty(rows.shape, np.float32)
    for i, row in enumerate(rows):
        try:
            out[i] = checked_vector(row, dim)
        except ValueError as err:
            raise ValueError(f"{what} row {i}: {err}") from None
    return out


class UnreadableRecord(ValueError):
    """The record is not a msgpack map with a bin ``vector`` at all (as opposed to a vector that fails the checks)."""


def item_vector_of(value: bytes, dim: int | None) -> np.ndarray:
    """The checked unit vector of an ``item-vectors`` value; :class:`UnreadableRecord` or ``ValueError`` say why not."""
    from dreamstream import codec

    try:
        record = codec.unpack(value)
    except Exception as err:  # msgpack raises several unrelated types on garbage
        raise UnreadableRecord(f"value is not msgpack: {type(err).__name__}") from None
    raw = record.get("vector") if isinstance(record, dict) else None
    if not isinstance(raw, (bytes, bytearray)):
        raise UnreadableRecord("value is not a map with a bin 'vector'")
    return checked_vector(raw, dim)
