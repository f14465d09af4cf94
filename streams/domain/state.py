"""The user-state row kept in the worker's table (and its changelog), and its byte encoding.

Everything needed to continue a user's stream exactly lives in one row:
the DreamUMM state, the OPAL GRU states and soft sums, the cold-start
candidate sum, counters, and the position of the last applied event (the
idempotence key: a replayed event at or before it is skipped). The last
published record is kept too, so after a crash between the changelog write
and the output send the same record can be sent again, byte for byte.

Why one flat float32 array per user, not five: with live traffic nearly
every event touches a user the batch has not seen, so the per-user work is
paid per event. Gathering five arrays per user into the batch's matrices,
making five views back out of them and packing five ``bin`` fields per row
was ~20% of ``apply_batch``; with one array each of those is one operation.
The named parts (``state``, ``hidden``, ...) are views into it.

The row is a fixed binary layout (header, floats, record), so reading one is
a ``struct`` unpack and a ``numpy`` view instead of a msgpack map. Rows
written before this layout (msgpack maps) are still read, so a worker
upgraded in place keeps every user's state.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dreamstream import codec

NO_TS = -1
MAGIC = b"DSR1"  # first bytes of a row in this layout; a msgpack map (the old rows) never starts with "D"
HEADER = struct.Struct("<4s3i7q")  # magic, D, K, H, seq, last_ts, positives, impressions, partition, offset, index


def _shapes(dim: int, interests: int, hidden: int) -> list[tuple[int, ...]]:
    """The parts of a flat state, in order: s [D], hidden [K,H], global [H], soft [K,D], candidate sum [D]."""
    return [(dim,), (interests, hidden), (hidden,), (interests, dim), (dim,)]


def flat_size(dim: int, interests: int, hidden: int) -> int:
    """Floats in one user's flat state (all of :func:`_shapes`)."""
    return sum(int(np.prod(shape)) for shape in _shapes(dim, interests, hidden))


def parts(flat: np.ndarray, dim: int, interests: int, hidden: int) -> tuple[np.ndarray, ...]:
    """Views (state, hidden, glob, soft, cand) into flat states ``[..., F]``: writes to them write the flat array.

    Works on one user's ``[F]`` and on a batch's ``[n, F]`` alike (the
    matrices ``apply_batch`` steps are these views of its one gathered array).
    """
    lead = flat.shape[:-1]
    shapes = _shapes(dim, interests, hidden)
    cut = np.cumsum([0] + [int(np.prod(shape)) for shape in shapes])
    views = tuple(flat[..., cut[i]:cut[i + 1]].reshape(*lead, *shape) for i, shape in enumerate(shapes))
    if flat.size and not all(np.may_share_memory(v, flat) for v in views):  # a reshape that copied would lose every write
        raise AssertionError("state parts must be views of the flat state")
    return views


class Part:
    """One named part of a user's flat state, read as a view: writing to it writes the flat array."""

    def __init__(self, index: int, doc: str) -> None:
        self.index, self.__doc__ = index, doc

    def __get__(self, st: "UserState | None", owner: type | None = None) -> Any:
        return self if st is None else parts(st.flat, *st.dims)[self.index]


@dataclass(slots=True)
class UserState:
    """One user's streaming state: ``flat`` float32 [F] (see :func:`parts`) and counters; dims are (D, K, H)."""

    flat: np.ndarray
    dims: tuple[int, int, int]
    seq: int = 0  # events applied
    last_ts: int = NO_TS  # event time of the last applied event
    positives: int = 0  # positive (non-skip) watches applied
    impressions: int = 0  # impressions applied
    partition: int = -1  # position of the last applied event
    offset: int = -1
    index: int = -1
    record: bytes = field(default=b"", repr=False)  # last published user-embeddings value
    # OPAL's readout (interests [K, D], weights [K]) inside ``record``, when this process computed the row: kept so
    # the next batch need not parse the record again; not encoded (a decoded row reads it from its record)
    readout: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

    def applied(self, partition: int, offset: int, index: int) -> bool:
        """True when the event at this position was already applied (a replay)."""
        return partition == self.partition and (offset, index) <= (self.offset, self.index)

    state = Part(0, "DreamUMM sum s [D].")
    hidden = Part(1, "OPAL per-interest GRU states [K, H].")
    glob = Part(2, "OPAL global GRU state [H].")
    soft = Part(3, "OPAL soft-assignment sums [K, D].")
    cand = Part(4, "Candidate-DreamUMM sum of impressed videos [D].")


def new_state(dim: int, interests: int, hidden: int) -> UserState:
    """The state of a user never seen before: all zeros."""
    return UserState(np.zeros(flat_size(dim, interests, hidden), np.float32), (dim, interests, hidden))


def encode(st: UserState) -> bytes:
    """A row: the header (dims, counters, position), the flat float32 state (little-endian), the last record."""
    head = HEADER.pack(MAGIC, *st.dims, st.seq, st.last_ts, st.positives, st.impressions, st.partition, st.offset, st.index)
    return b"".join((head, codec.vec_to_bin(st.flat), st.record))


def row_size(st: UserState) -> int:
    """Bytes of ``encode(st)``, without encoding it."""
    return HEADER.size + 4 * st.flat.size + len(st.record)


def decode(data: bytes) -> UserState:
    """Inverse of :func:`encode`; also reads the msgpack rows of earlier versions. The floats are a read-only view."""
    if data[:4] != MAGIC:
        return _decode_msgpack(data)
    _, d, k, h, seq, last_ts, positives, impressions, partition, offset, index = HEADER.unpack_from(data)
    size = flat_size(d, k, h)
    flat = np.frombuffer(data, np.float32, count=size, offset=HEADER.size)
    return UserState(flat, (d, k, h), seq, last_ts, positives, impressions, partition, offset, index,
                     data[HEADER.size + 4 * size:])


def _decode_msgpack(data: bytes) -> UserState:
    """A row as versions before the flat layout wrote it: a msgpack map with one ``bin`` per part."""
    row = codec.unpack(data)
    d, k, h = row["shape"]
    flat = np.concatenate([codec.bin_to_vec(row[name]) for name in ("s", "h", "g", "o", "c")])
    return UserState(flat, (d, k, h), *row["n"], row["r"])
