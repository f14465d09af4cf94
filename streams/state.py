"""The user-state row kept in the worker's table (and its changelog), and its byte encoding.

Everything needed to continue a user's stream exactly lives in one row:
the DreamUMM state, the OPAL GRU states and soft sums, the cold-start
candidate sum, counters, and the position of the last applied event (the
idempotence key: a replayed event at or before it is skipped). The last
published record is kept too, so after a crash between the changelog write
and the output send the same record can be sent again, byte for byte.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dreamstream import codec

NO_TS = -1


@dataclass
class UserState:
    """One user's streaming state. Arrays are float32; shapes follow the bundle (D, K, H)."""

    state: np.ndarray  # [D]    DreamUMM sum s
    hidden: np.ndarray  # [K,H] OPAL per-interest GRU states
    glob: np.ndarray  # [H]     OPAL global GRU state
    soft: np.ndarray  # [K,D]   OPAL soft-assignment sums
    cand: np.ndarray  # [D]     Candidate-DreamUMM sum of impressed videos
    seq: int = 0  # events applied
    last_ts: int = NO_TS  # event time of the last applied event
    positives: int = 0  # positive (non-skip) watches applied
    impressions: int = 0  # impressions applied
    partition: int = -1  # position of the last applied event
    offset: int = -1
    index: int = -1
    record: bytes = field(default=b"", repr=False)  # last published user-embeddings value

    def applied(self, partition: int, offset: int, index: int) -> bool:
        """True when the event at this position was already applied (a replay)."""
        return partition == self.partition and (offset, index) <= (self.offset, self.index)


def new_state(dim: int, interests: int, hidden: int) -> UserState:
    """The state of a user never seen before: all zeros."""
    return UserState(
        state=np.zeros(dim, np.float32),
        hidden=np.zeros((interests, hidden), np.float32),
        glob=np.zeros(hidden, np.float32),
        soft=np.zeros((interests, dim), np.float32),
        cand=np.zeros(dim, np.float32),
    )


def encode(st: UserState) -> bytes:
    """A row as msgpack: shapes, raw float32 arrays, counters, position, last record."""
    k, h = st.hidden.shape
    return codec.pack(
        {
            "shape": [int(st.state.shape[0]), int(k), int(h)],
            "s": codec.vec_to_bin(st.state),
            "h": codec.vec_to_bin(st.hidden),
            "g": codec.vec_to_bin(st.glob),
            "o": codec.vec_to_bin(st.soft),
            "c": codec.vec_to_bin(st.cand),
            "n": [st.seq, st.last_ts, st.positives, st.impressions, st.partition, st.offset, st.index],
            "r": st.record,
        }
    )


def decode(data: bytes) -> UserState:
    """Inverse of :func:`encode`."""
    row = codec.unpack(data)
    d, k, h = row["shape"]
    seq, last_ts, positives, impressions, partition, offset, index = row["n"]
    return UserState(
        state=codec.bin_to_vec(row["s"]),
        hidden=codec.bin_to_vec(row["h"]).reshape(k, h),
        glob=codec.bin_to_vec(row["g"]),
        soft=codec.bin_to_vec(row["o"]).reshape(k, d),
        cand=codec.bin_to_vec(row["c"]),
        seq=seq, last_ts=last_ts, positives=positives, impressions=impressions,
        partition=partition, offset=offset, index=index, record=row["r"],
    )
