"""The user-state row: one flat array per user, its named parts as views, the binary layout and the old msgpack rows."""
from __future__ import annotations

import numpy as np
import pytest

from dreamstream import codec
from streams.domain import state as state_mod
from streams.domain.state import HEADER, MAGIC, flat_size, new_state, parts

DIMS = (6, 3, 4)  # D, K, H: unequal, so a part cut at the wrong place has the wrong shape


def filled(seed: int = 0) -> state_mod.UserState:
    st = new_state(*DIMS)
    st.flat = np.random.default_rng(seed).standard_normal(flat_size(*DIMS)).astype(np.float32)
    st.seq, st.last_ts, st.positives, st.impressions = 9, 1_700_000_000_123, 7, 2
    st.partition, st.offset, st.index, st.record = 5, 2**40 + 3, 1, b"\x89last record bytes"
    return st


def test_parts_are_views_in_order_and_shape():
    d, k, h = DIMS
    st = filled()
    s, hid, g, soft, cand = st.state, st.hidden, st.glob, st.soft, st.cand
    assert [p.shape for p in (s, hid, g, soft, cand)] == [(d,), (k, h), (h,), (k, d), (d,)]
    assert np.array_equal(np.concatenate([p.ravel() for p in (s, hid, g, soft, cand)]), st.flat)
    hid[1, 2] = 42.0  # a write through a part is a write to the flat state
    assert st.flat[d + 1 * h + 2] == 42.0


def test_batch_parts_step_the_gathered_matrix():
    """apply_batch steps these views of one [n, F] matrix; a fancy-index assignment must land in it."""
    X = np.zeros((4, flat_size(*DIMS)), np.float32)
    S, Hd, G, O, C = parts(X, *DIMS)
    O[np.array([1, 3])] += 1.0
    Hd[2] = 5.0
    assert X[1].sum() == X[3].sum() == DIMS[0] * DIMS[1] and X[0].sum() == 0
    assert np.array_equal(parts(X[2], *DIMS)[1], np.full(DIMS[1:], 5.0))


def test_row_round_trip_is_exact():
    st = filled()
    row = state_mod.encode(st)
    assert row[:4] == MAGIC and len(row) == HEADER.size + 4 * flat_size(*DIMS) + len(st.record)
    back = state_mod.decode(row)
    assert back.dims == DIMS and np.array_equal(back.flat, st.flat)
    assert (back.seq, back.last_ts, back.positives, back.impressions) == (9, 1_700_000_000_123, 7, 2)
    assert (back.partition, back.offset, back.index, back.record) == (5, 2**40 + 3, 1, st.record)


def test_a_decoded_row_cannot_be_changed_in_place():
    """A row read from the table or the cache is shared: stepping it in place would corrupt a replay."""
    back = state_mod.decode(state_mod.encode(filled()))
    with pytest.raises(ValueError):
        back.state[0] = 1.0


def test_rows_written_before_the_flat_layout_are_still_read():
    """A worker upgraded in place finds msgpack rows in its changelog; every user's state must survive."""
    st = filled(1)
    old_row = codec.pack({
        "shape": list(DIMS),
        "s": codec.vec_to_bin(st.state), "h": codec.vec_to_bin(st.hidden), "g": codec.vec_to_bin(st.glob),
        "o": codec.vec_to_bin(st.soft), "c": codec.vec_to_bin(st.cand),
        "n": [st.seq, st.last_ts, st.positives, st.impressions, st.partition, st.offset, st.index],
        "r": st.record,
    })
    back = state_mod.decode(old_row)
    assert back.dims == DIMS and np.array_equal(back.flat, st.flat)
    assert (back.seq, back.offset, back.record) == (st.seq, st.offset, st.record)
    assert state_mod.decode(state_mod.encode(back)).applied(5, 2**40 + 3, 1)


def test_row_size_is_the_encoded_length_without_encoding() -> None:
    """The flush cuts its rows into ~1 MB requests by row_size before encoding them, a chunk at a time."""
    from streams.domain.state import encode, new_state, row_size

    st = new_state(8, 2, 4)
    assert row_size(st) == len(encode(st))
    st.record = b"x" * 37
    assert row_size(st) == len(encode(st))
