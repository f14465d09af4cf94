"""The ``user-embeddings`` record: one value per touched user per batch, as the design fixes it."""
from __future__ import annotations

from typing import Any

import numpy as np

from dreamstream import codec


def user_record(
    user: str, seq: int, ts: int, model: str, vector: np.ndarray, interests: np.ndarray, weights: np.ndarray, cold: bool
) -> bytes:
    """Pack ``{user, seq, ts, model, vector, interests, interest_ids, interest_weights, cold}``.

    ``ts`` is the event time of the last applied event (not the wall clock),
    so re-sending a record after a crash produces the same bytes.
    """
    return codec.pack(
        {
            "user": user,
            "seq": int(seq),
            "ts": int(ts),
            "model": model,
            "vector": codec.vec_to_bin(vector),
            "interests": codec.vec_to_bin(interests),
            "interest_ids": list(range(int(interests.shape[0]))),
            "interest_weights": np.asarray(weights, np.float32).tolist(),
            "cold": bool(cold),
        }
    )


def read_record(data: bytes) -> dict[str, Any]:
    """Decode a record, vectors as float32 arrays (``interests`` as [K, D])."""
    rec = codec.unpack(data)
    rec["vector"] = codec.bin_to_vec(rec["vector"])
    rec["interests"] = codec.bin_to_vec(rec["interests"], rec["vector"].shape[0])
    return rec
