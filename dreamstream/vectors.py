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

from typing import Sequence

import numpy as np

from dreamstream import codec

MIN_NORM = 1e-6  # below: direction lost in float32 noise (a 1e-30 vector normalises to garbage)
MAX_NORM = 1e6   # above: squares overflow float32 in a dot product (1e20 did)


def checked_vector(raw: bytes | bytearray | memoryview | np.ndarray, dim: int | None) -> np.ndarray:
    """float32 [dim] of unit length from ``raw`` (float32 bytes or an array); ``ValueError`` says what is wrong."""
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        vec = np.asarray(raw, dtype=np.float32).reshape(-1)
        if vec.size == 0:
            raise ValueError("vector is empty")
        raw = vec.astype("<f4").tobytes()
    rows, errors = checked_matrix([bytes(raw)], dim if dim is not None else len(raw) // 4)
    if errors[0] is not None:
        raise ValueError(errors[0])
    return rows[0]


def checked_matrix(raws: Sequence[bytes], dim: int) -> tuple[np.ndarray, list[str | None]]:
    """Many vectors (float32 bytes) of width ``dim`` checked at once: unit rows [n, dim], and per row None or why not.

    The one check every vector goes through (:func:`checked_vector` is this
    for one), vectorised so a worker reading millions of ``item-vectors``
    records checks a fetch at a time (per record it was most of a cold
    start). A refused row is zeros.
    """
    n = len(raws)
    errors: list[str | None] = [None] * n
    whole = []
    for i, raw in enumerate(raws):
        if len(raw) == 0 or len(raw) % 4:
            errors[i] = f"vector has {len(raw)} bytes, not a whole number of float32s"
        elif len(raw) != 4 * dim:
            errors[i] = f"vector is {len(raw) // 4}-d, expected {dim}-d"
        else:
            whole.append(i)
    out = np.zeros((n, dim), np.float32)
    if not whole:
        return out, errors
    vec = np.frombuffer(b"".join([raws[i] for i in whole]), dtype="<f4").reshape(len(whole), dim).astype(np.float64)
    finite = np.isfinite(vec).all(axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        norm = np.sqrt(np.einsum("ij,ij->i", vec, vec))
    sane = finite & (norm >= MIN_NORM) & (norm <= MAX_NORM)
    for j in np.flatnonzero(~sane).tolist():
        errors[whole[j]] = ("vector has NaN or infinite values" if not finite[j] else
                            f"vector norm {norm[j]:.3g} is outside [{MIN_NORM:g}, {MAX_NORM:g}]")
    rows = np.array(whole, np.int64)[sane]
    out[rows] = (vec[sane] / norm[sane, None]).astype(np.float32)
    return out, errors


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
    return checked_vector(vector_bytes_of(value), dim)


def vector_bytes_of(value: bytes) -> bytes:
    """The unchecked ``vector`` bytes of an ``item-vectors`` value; :class:`UnreadableRecord` if it has none."""
    return item_record_parts(value)[0]


def item_record_parts(value: bytes) -> tuple[bytes, bool]:
    """An ``item-vectors`` value's unchecked ``vector`` bytes and its ``live`` flag (a new video refined by watchers)."""
    try:
        record = codec.unpack(value)
    except Exception as err:  # msgpack raises several unrelated types on garbage
        raise UnreadableRecord(f"value is not msgpack: {type(err).__name__}") from None
    raw = record.get("vector") if isinstance(record, dict) else None
    if not isinstance(raw, (bytes, bytearray)):
        raise UnreadableRecord("value is not a map with a bin 'vector'")
    return bytes(raw), record.get("live") is True
