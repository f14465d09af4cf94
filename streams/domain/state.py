"""The user-state row kept in the worker's table (and its changelog), and its byte encoding.

Everything needed to continue a user's stream exactly lives in one row:
the DreamUMM state, the OPAL GRU states and soft sums, the cold-start
candidate sum, OPAL's last readout (interests and their weights), counters,
and the position of the last applied event (the idempotence key: a replayed
event at or before it is skipped).

The row holds the state, not a copy of the published record: a record is a
function of the row (``streams.domain.apply`` builds it from the vector the
state reads out, OPAL's stored readout, the counters and the bundle's
version), so after a crash between the changelog write and the output send
the same record is built again, byte for byte, from the row. Keeping the
record in the row as well doubled it (~4 KB at D=64, K=4).

The floats are stored as 16-bit block floating point
(``streams.domain.block_scale``): int16 codes with one power-of-two scale
per part, each element within 2**-14 of its part's largest magnitude. The
in-memory state a batch steps is float32; the codes are what a batch leaves
behind (``apply`` quantises its rows once at the end, vectorised), so a
stored row, a row in the cache and the record built from either are the
same numbers. At D=64, K=4, H=64 a row is 2,008 bytes (1,964 floats' worth
of 3,856).

Why one flat array per user, not seven: with live traffic nearly every
event touches a user the batch has not seen, so the per-user work is paid
per event; gathering one array per user is one operation per user.

Rows written before this layout (float32 rows with their record, ``DSR1``;
msgpack maps before those) are still read, so a worker upgraded in place
keeps every user's state.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from dreamstream import codec
from streams.domain import block_scale, records

NO_TS = -1
MAGIC = b"DSR2"  # first bytes of a row in this layout; a msgpack map (the oldest rows) never starts with "D"
MAGIC_F32 = b"DSR1"  # float32 rows that carried their last record (before the 16-bit layout)
HEADER = struct.Struct("<4s3i7q")  # magic, D, K, H, seq, last_ts, positives, impressions, partition, offset, index
PARTS = 7
EXPS_BYTES = 8  # the parts' int8 exponents, padded so the int16 codes start at an even offset


def _shapes(dim: int, interests: int, hidden: int) -> list[tuple[int, ...]]:
    """The parts of a flat state, in order: s [D], hidden [K,H], global [H], soft [K,D], candidate sum [D],
    OPAL's readout: interests [K,D] and weights [K] (all zero until OPAL has stepped the user once)."""
    return [(dim,), (interests, hidden), (hidden,), (interests, dim), (dim,), (interests, dim), (interests,)]


@lru_cache(maxsize=16)
def cuts(dim: int, interests: int, hidden: int) -> np.ndarray:
    """The boundaries of the parts along a flat state: ``[0, ..., F]`` (read-only)."""
    out = np.cumsum([0] + [int(np.prod(shape)) for shape in _shapes(dim, interests, hidden)])
    out.setflags(write=False)
    return out


def flat_size(dim: int, interests: int, hidden: int) -> int:
    """Floats in one user's flat state (all of :func:`_shapes`)."""
    return int(cuts(dim, interests, hidden)[-1])


def parts(flat: np.ndarray, dim: int, interests: int, hidden: int) -> tuple[np.ndarray, ...]:
    """Views (state, hidden, glob, soft, cand, interests, weights) into flat states ``[..., F]``.

    Works on one user's ``[F]`` and on a batch's ``[n, F]`` alike (the
    matrices ``apply_batch`` steps are these views of its one gathered array).
    """
    lead = flat.shape[:-1]
    cut = cuts(dim, interests, hidden)
    shapes = _shapes(dim, interests, hidden)
    views = tuple(flat[..., cut[i]:cut[i + 1]].reshape(*lead, *shape) for i, shape in enumerate(shapes))
    if flat.size and not all(np.may_share_memory(v, flat) for v in views):  # a reshape that copied would lose every write
        raise AssertionError("state parts must be views of the flat state")
    return views


class Part:
    """One named part of a user's state, read (as float32) from its stored codes."""

    def __init__(self, index: int, doc: str) -> None:
        self.index, self.__doc__ = index, doc

    def __get__(self, st: "UserState | None", owner: type | None = None) -> Any:
        return self if st is None else parts(st.flat, *st.dims)[self.index]


@dataclass(slots=True)
class UserState:
    """One user's streaming state as stored: int16 ``codes`` [F], int8 ``exps`` [7] and counters; dims (D, K, H)."""

    codes: np.ndarray
    exps: np.ndarray
    dims: tuple[int, int, int]
    seq: int = 0  # events applied
    last_ts: int = NO_TS  # event time of the last applied event
    positives: int = 0  # positive (non-skip) watches applied
    impressions: int = 0  # impressions applied
    partition: int = -1  # position of the last applied event
    offset: int = -1
    index: int = -1

    def applied(self, partition: int, offset: int, index: int) -> bool:
        """True when the event at this position was already applied (a replay)."""
        return partition == self.partition and (offset, index) <= (self.offset, self.index)

    @property
    def flat(self) -> np.ndarray:
        """The float32 values [F] the codes stand for (a new array: writing to it does not change the state)."""
        return block_scale.dequantize(self.codes[None], self.exps[None], cuts(*self.dims))[0]

    @property
    def has_readout(self) -> bool:
        """Has OPAL read this user out yet? (Its weights sum to 1 once it has; all zero before.)"""
        return bool(self.codes[cuts(*self.dims)[-2]:].any())

    state = Part(0, "DreamUMM sum s [D].")
    hidden = Part(1, "OPAL per-interest GRU states [K, H].")
    glob = Part(2, "OPAL global GRU state [H].")
    soft = Part(3, "OPAL soft-assignment sums [K, D].")
    cand = Part(4, "Candidate-DreamUMM sum of impressed videos [D].")
    interests = Part(5, "OPAL's last readout: interest vectors [K, D].")
    weights = Part(6, "OPAL's last readout: interest weights [K].")


def new_state(dim: int, interests: int, hidden: int) -> UserState:
    """The state of a user never seen before: all zeros."""
    return UserState(np.zeros(flat_size(dim, interests, hidden), np.int16), np.zeros(PARTS, np.int8),
                     (dim, interests, hidden))


def from_values(flat: np.ndarray, dims: tuple[int, int, int], **counters: int) -> UserState:
    """A state holding float32 values [F] as closely as the row stores them (see ``block_scale``)."""
    codes, exps = block_scale.quantize(np.asarray(flat, np.float32)[None], cuts(*dims))
    return UserState(codes[0], exps[0], dims, **counters)


def encode(st: UserState) -> bytes:
    """A row: the header (dims, counters, position), the parts' exponents, the int16 codes (little-endian)."""
    head = HEADER.pack(MAGIC, *st.dims, st.seq, st.last_ts, st.positives, st.impressions, st.partition, st.offset, st.index)
    return b"".join((head, st.exps.tobytes(), bytes(EXPS_BYTES - PARTS), st.codes.astype("<i2", copy=False).tobytes()))


def row_size(st: UserState) -> int:
    """Bytes of ``encode(st)``, without encoding it."""
    return HEADER.size + EXPS_BYTES + 2 * st.codes.size


def decode(data: bytes) -> UserState:
    """Inverse of :func:`encode`; also reads the rows of earlier layouts. The codes are a read-only view."""
    if data[:4] == MAGIC_F32:
        return _decode_float32(data)
    if data[:4] != MAGIC:
        return _decode_msgpack(data)
    _, d, k, h, *counters = HEADER.unpack_from(data)
    exps = np.frombuffer(data, np.int8, count=PARTS, offset=HEADER.size)
    codes = np.frombuffer(data, "<i2", count=flat_size(d, k, h), offset=HEADER.size + EXPS_BYTES)
    return UserState(codes, exps, (d, k, h), *counters)


def _legacy(values: list[np.ndarray], dims: tuple[int, int, int], counters: list[int], record: bytes) -> UserState:
    """A row of an earlier layout: its five float32 parts, its counters, OPAL's readout taken from its record."""
    d, k, _ = dims
    seq, impressions = counters[0], counters[3]
    if record and seq > impressions:  # it has seen a watch: its record holds OPAL's readout
        rec = records.read_record(record)
        readout = [np.asarray(rec["interests"], np.float32).ravel(), np.asarray(rec["interest_weights"], np.float32)]
    else:
        readout = [np.zeros(k * d, np.float32), np.zeros(k, np.float32)]
    keys = ("seq", "last_ts", "positives", "impressions", "partition", "offset", "index")
    return from_values(np.concatenate([*values, *readout]), dims, **dict(zip(keys, counters)))


def _decode_float32(data: bytes) -> UserState:
    """A ``DSR1`` row: header, five float32 parts, the last published record."""
    _, d, k, h, *counters = HEADER.unpack_from(data)
    size = (cuts(d, k, h)[5])  # the five parts before the readout
    flat = np.frombuffer(data, np.float32, count=size, offset=HEADER.size)
    return _legacy([flat], (d, k, h), counters, data[HEADER.size + 4 * size:])


def _decode_msgpack(data: bytes) -> UserState:
    """A row as versions before the flat layout wrote it: a msgpack map with one ``bin`` per part."""
    row = codec.unpack(data)
    d, k, h = row["shape"]
    values = [codec.bin_to_vec(row[name]) for name in ("s", "h", "g", "o", "c")]
    return _legacy(values, (d, k, h), list(row["n"]), row["r"])
