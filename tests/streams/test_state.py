"""The user-state row: one flat array per user, its named parts, the 16-bit layout, and the rows of earlier layouts."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st_

from dreamstream import codec
from streams.domain import block_scale, records
from streams.domain import state as state_mod
from streams.domain.state import HEADER, MAGIC, cuts, flat_size, from_values, new_state, parts

DIMS = (6, 3, 4)  # D, K, H: unequal, so a part cut at the wrong place has the wrong shape
COUNTERS = dict(seq=9, last_ts=1_700_000_000_123, positives=7, impressions=2, partition=5, offset=2**40 + 3, index=1)


def values(seed: int = 0, dims: tuple[int, int, int] = DIMS) -> np.ndarray:
    """A flat state whose parts have very different magnitudes, as a long history gives them."""
    rng = np.random.default_rng(seed)
    flat = rng.standard_normal(flat_size(*dims)).astype(np.float32)
    cut = cuts(*dims)
    flat[cut[0]:cut[1]] *= 3e4  # an undecayed DreamUMM sum
    flat[cut[3]:cut[4]] *= 2e5  # OPAL's undecayed soft sums: past float16's 65,504
    return flat


def filled(seed: int = 0) -> state_mod.UserState:
    return from_values(values(seed), DIMS, **COUNTERS)


def test_parts_are_views_in_order_and_shape():
    d, k, h = DIMS
    flat = values()
    names = parts(flat, *DIMS)
    assert [p.shape for p in names] == [(d,), (k, h), (h,), (k, d), (d,), (k, d), (k,)]
    assert np.array_equal(np.concatenate([p.ravel() for p in names]), flat)
    names[1][1, 2] = 42.0  # a write through a part is a write to the flat array
    assert flat[d + 1 * h + 2] == 42.0


def test_batch_parts_step_the_gathered_matrix():
    """apply_batch steps these views of one [n, F] matrix; a fancy-index assignment must land in it."""
    X = np.zeros((4, flat_size(*DIMS)), np.float32)
    S, Hd, G, O, C, I, W = parts(X, *DIMS)
    O[np.array([1, 3])] += 1.0
    Hd[2] = 5.0
    assert X[1].sum() == X[3].sum() == DIMS[0] * DIMS[1] and X[0].sum() == 0
    assert np.array_equal(parts(X[2], *DIMS)[1], np.full(DIMS[1:], 5.0))


def test_row_round_trip_is_exact():
    st = filled()
    row = state_mod.encode(st)
    assert row[:4] == MAGIC and len(row) == HEADER.size + 8 + 2 * flat_size(*DIMS)
    back = state_mod.decode(row)
    assert back.dims == DIMS and np.array_equal(back.codes, st.codes) and np.array_equal(back.flat, st.flat)
    assert (back.seq, back.last_ts, back.positives, back.impressions) == (9, 1_700_000_000_123, 7, 2)
    assert (back.partition, back.offset, back.index) == (5, 2**40 + 3, 1)


def test_stored_values_are_within_the_bound_of_each_part():
    """Every element within 2**-14 of its part's largest magnitude, sums far past float16's range included."""
    flat = values(3)
    back = filled(3).flat
    cut = cuts(*DIMS)
    for a, b in zip(cut[:-1], cut[1:]):
        peak = np.abs(flat[a:b]).max()
        assert np.abs(back[a:b] - flat[a:b]).max() <= 2.0 ** -14 * peak
    assert np.isfinite(back).all() and np.abs(back).max() > 65504


@settings(max_examples=200, deadline=None)
@given(st_.lists(st_.floats(-2.0 ** 99, 2.0 ** 99, allow_nan=False, width=32), min_size=flat_size(*DIMS),
                 max_size=flat_size(*DIMS)))
@example([0.0] * (flat_size(*DIMS) - 1) + [1.1754943508222875e-38])  # a part far below 2**-100: flushed, exponent 0
@example([0.0] * (flat_size(*DIMS) - 1) + [2.0 ** -101 * 1.5])  # just above the flush line: kept at exponent -100
def test_quantising_is_bounded_and_idempotent(floats):
    """Storing a stored row again changes nothing: a row read from the table and written back is byte-identical."""
    flat = np.array(floats, np.float32)[None]
    cut = cuts(*DIMS)
    codes, exps, back = block_scale.round_trip(flat, cut)
    assert (np.abs(back - flat) <= block_scale.error_bound(flat, cut) + 1e-38).all()
    again_codes, again_exps = block_scale.quantize(back, cut)
    assert np.array_equal(again_codes, codes) and np.array_equal(again_exps, exps)


def test_a_row_at_the_design_dims_fits_in_two_kilobytes():
    """D=64, K=4, H=64: the issue's ceiling of 2 KB per user (it was ~4 KB with float32 and the record inside)."""
    st = from_values(values(1, (64, 4, 64)), (64, 4, 64))
    assert state_mod.row_size(st) == len(state_mod.encode(st)) == 2008 <= 2048


def test_a_decoded_row_cannot_be_changed_in_place():
    """A row read from the table or the cache is shared: stepping it in place would corrupt a replay."""
    back = state_mod.decode(state_mod.encode(filled()))
    with pytest.raises(ValueError):
        back.codes[0] = 1


def test_readout_marker():
    """OPAL's readout is all zero until OPAL has stepped the user (apply then serves the bundle's prior)."""
    assert not new_state(*DIMS).has_readout
    assert filled().has_readout


def _record(st_values: np.ndarray, seq: int) -> bytes:
    d, k, _ = DIMS
    interests, weights = parts(st_values, *DIMS)[5:]
    return records.user_record("u", seq, 1, "v1", np.ones(d, np.float32), interests, weights, False)


@pytest.mark.parametrize("layout", ["float32", "msgpack"])
def test_rows_of_earlier_layouts_are_still_read(layout):
    """A worker upgraded in place finds float32 rows (with their record) or msgpack rows in its changelog:
    every user's state survives, OPAL's readout taken from the record the row carried."""
    flat = values(1)
    cut = cuts(*DIMS)
    five = flat[:cut[5]]
    rec = _record(flat, COUNTERS["seq"])
    counters = list(COUNTERS.values())
    if layout == "float32":
        old_row = HEADER.pack(b"DSR1", *DIMS, *counters) + codec.vec_to_bin(five) + rec
    else:
        names = parts(flat, *DIMS)
        old_row = codec.pack({"shape": list(DIMS), "n": counters, "r": rec,
                              **{key: codec.vec_to_bin(names[i]) for i, key in enumerate("shgoc")}})
    back = state_mod.decode(old_row)
    want = from_values(flat, DIMS)
    assert back.dims == DIMS and np.array_equal(back.codes, want.codes) and np.array_equal(back.exps, want.exps)
    assert (back.seq, back.offset, back.positives) == (9, 2**40 + 3, 7)
    assert state_mod.decode(state_mod.encode(back)).applied(5, 2**40 + 3, 1)


def test_row_size_is_the_encoded_length_without_encoding() -> None:
    """The flush cuts its rows into ~1 MB requests by row_size before encoding them, a chunk at a time."""
    st = new_state(8, 2, 4)
    assert state_mod.row_size(st) == len(state_mod.encode(st))
