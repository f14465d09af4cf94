"""The ``user-embeddings`` record: one value per touched user per batch, as the design fixes it."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack
import numpy as np

from dreamstream import codec

_pack = msgpack.Packer(use_bin_type=True).pack  # the options of codec.pack; a reused Packer skips re-creating one per call


def user_record(
    user: str, seq: int, ts: int, model: str, vector: np.ndarray, interests: np.ndarray, weights: np.ndarray, cold: bool,
    space: str = "",
) -> bytes:
    """Pack ``{user, seq, ts, model, space, vector, interests, interest_ids, interest_weights, cold}``.

    ``space``: the model namespace whose item space the vectors live in (the
    client searches a record only with an index of the same space).

    ``ts`` is the event time of the last applied event (not the wall clock),
    so re-sending a record after a crash produces the same bytes.
    """
    return user_records([user], [seq], [ts], model, vector[None], interests[None], np.asarray(weights)[None], [cold],
                        space)[0]


def user_records(users: Sequence[str], seqs: Sequence[int], tss: Sequence[int], model: str, vectors: np.ndarray,
                 interests: np.ndarray, weights: np.ndarray, colds: Sequence[bool], space: str = "") -> list[bytes]:
    """The records of a batch's users (vectors [n,D], interests [n,K,D], weights [n,K]), byte for byte what
    ``codec.pack`` makes of each record's map.

    Why not ``codec.pack`` per user: with live traffic nearly every event
    gets its own record, and building and packing a ten-key map per user
    was ~15% of ``apply_batch``. Everything but the user, seq, ts and cold
    flag has the same layout for the whole batch, so the arrays are
    converted once and each record is a join of byte slices.
    """
    n, k, d = interests.shape
    vec, inter = codec.vec_to_bin(vectors), codec.vec_to_bin(interests)  # every record's slice, converted once
    # msgpack packs a Python float as a big-endian float64 behind the 0xcb marker
    doubles = np.empty((n, k, 9), np.uint8)
    doubles[:, :, 0] = 0xCB
    doubles[:, :, 1:] = np.asarray(weights, np.float32).astype(">f8").view(np.uint8).reshape(n, k, 8)
    wts = doubles.tobytes()
    vec_head = _pack("vector") + _bin_header(d * 4)
    inter_head = _pack("interests") + _bin_header(k * d * 4)
    middle = _pack("model") + _pack(model) + _pack("space") + _pack(space)
    tail_head = _pack("interest_ids") + _pack(list(range(k))) + _pack("interest_weights") + _array_header(k)
    cold_key = _pack("cold")
    head, seq_key, ts_key = b"\x8a" + _pack("user"), _pack("seq"), _pack("ts")  # 0x8a: a map of ten entries
    vb, ib, wb = d * 4, k * d * 4, k * 9
    return [
        b"".join((head, _pack(users[i]), seq_key, _pack(int(seqs[i])), ts_key, _pack(int(tss[i])), middle,
                  vec_head, vec[i * vb:(i + 1) * vb], inter_head, inter[i * ib:(i + 1) * ib],
                  tail_head, wts[i * wb:(i + 1) * wb], cold_key, b"\xc3" if colds[i] else b"\xc2"))
        for i in range(n)
    ]


def _bin_header(size: int) -> bytes:
    """msgpack's header of a ``bin`` of ``size`` bytes (bin 8, 16 or 32)."""
    if size < 1 << 8:
        return b"\xc4" + size.to_bytes(1, "big")
    return b"\xc5" + size.to_bytes(2, "big") if size < 1 << 16 else b"\xc6" + size.to_bytes(4, "big")


def _array_header(length: int) -> bytes:
    """msgpack's header of an array of ``length`` items (fixarray, array 16 or 32)."""
    if length < 16:
        return bytes([0x90 | length])
    return b"\xdc" + length.to_bytes(2, "big") if length < 1 << 16 else b"\xdd" + length.to_bytes(4, "big")


def read_record(data: bytes) -> dict[str, Any]:
    """Decode a record, vectors as float32 arrays (``interests`` as [K, D])."""
    rec = codec.unpack(data)
    rec["vector"] = codec.bin_to_vec(rec["vector"])
    rec["interests"] = codec.bin_to_vec(rec["interests"], rec["vector"].shape[0])
    return rec
