"""The split protocol: leave-last-out over positive rows, ties by file order, masks; the global-time flag."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dreamstream.data.recbole import Dataset, load_dataset
from dreamstream.data.split import global_time_split, leave_last_out
from tests.data.conftest import INTER_HEADER, write_atomic

SKIP = (100, 10000)  # watch 1% of the video: a quick skip, not positive
PLAY = (9000, 10000)


def _rows(user: str, events: list[tuple[str, float, tuple[int, int]]]) -> list[tuple]:
    return [(user, item, 1, ts, w, d) for item, ts, (w, d) in events]


@pytest.fixture
def tiny(write_dataset) -> Dataset:
    # u1: positives a b c d e with a skip s in between; "d" and "e" share a timestamp: file order decides
    u1 = _rows("u1", [("a", 1, PLAY), ("s", 2, SKIP), ("b", 3, PLAY), ("c", 4, PLAY), ("e", 6, PLAY),
                      ("d", 6, PLAY), ("t", 7, SKIP)])
    # u2 has only 4 positives: dropped at min_positive=5
    u2 = _rows("u2", [("a", 1, PLAY), ("b", 2, PLAY), ("c", 3, PLAY), ("d", 4, PLAY), ("s", 5, SKIP)])
    # u3's rows are out of time order in the file
    u3 = _rows("u3", [("e", 9, PLAY), ("a", 5, PLAY), ("b", 6, PLAY), ("a", 7, PLAY), ("c", 8, PLAY)])
    return load_dataset(write_dataset(u1 + u2 + u3))


def test_leave_last_out_on_tiny(tiny: Dataset) -> None:
    split = leave_last_out(tiny, min_positive=5)
    ids = np.array(tiny.item_ids)
    assert [tiny.user_ids[u] for u in split.users] == ["u1", "u3"]
    # u1: rows 0..6; the tie at ts 6 is broken by row order, so "e" (row 4) comes before "d" (row 5)
    assert list(ids[tiny.item[split.valid_rows]]) == ["e", "c"]
    assert list(ids[tiny.item[split.test_rows]]) == ["d", "e"]
    np.testing.assert_array_equal(split.targets("test"), tiny.item[split.test_rows])
    hist = split.history("valid")
    assert list(ids[tiny.item[hist[0]]]) == ["a", "s", "b", "c"]  # skips stay in the history
    assert list(ids[tiny.item[hist[1]]]) == ["a", "b", "a"]  # event order, not file order
    np.testing.assert_array_equal(np.sort(np.concatenate(hist)), np.sort(split.train_rows))
    test_hist = split.history("test")
    assert list(ids[tiny.item[test_hist[0]]]) == ["a", "s", "b", "c", "e"]
    assert list(ids[tiny.item[test_hist[1]]]) == ["a", "b", "a", "c"]
    # masks: positive history only (the skip "s" is not masked), each item once
    assert [list(ids[e]) for e in split.exclude_items("valid")] == [["a", "b", "c"], ["a", "b"]]
    assert [list(ids[e]) for e in split.exclude_items("test")] == [["a", "b", "c", "e"], ["a", "b", "c"]]
    users, items = split.train_positive_pairs()
    assert [tiny.user_ids[u] for u in users] == ["u1"] * 3 + ["u3"] * 3
    assert "s" not in set(ids[items])


def test_min_positive(tiny: Dataset) -> None:
    assert len(leave_last_out(tiny, min_positive=4).users) == 3
    assert len(leave_last_out(tiny, min_positive=6).users) == 0
    with pytest.raises(ValueError, match="min_positive"):
        leave_last_out(tiny, min_positive=1)
    with pytest.raises(ValueError, match="upto"):
        leave_last_out(tiny).history("train")


def test_positive_falls_back_to_rating(write_dataset) -> None:
    rows = [("u", "a", 1, 1), ("u", "b", 0, 2), ("u", "c", 1, 3), ("u", "d", 1, 4), ("u", "e", 0, 5)]
    ds = load_dataset(write_dataset(rows, inter_header=("user_id:token", "item_id:token", "rating:float",
                                                        "timestamp:float")))
    split = leave_last_out(ds, min_positive=3)
    np.testing.assert_array_equal(split.positive, [True, False, True, True, False])
    assert ds.item_ids[split.test_rows[0]] == "d" and ds.item_ids[split.valid_rows[0]] == "c"
    np.testing.assert_array_equal(split.train_rows, [0, 1])


def test_global_time_split_cuts_by_time(tiny: Dataset) -> None:
    split = global_time_split(tiny, valid_frac=0.2, test_frac=0.2, min_positive=2)
    cut_valid = np.sort(tiny.timestamp)[round(0.6 * tiny.n_interactions) - 1]
    for u, v, t, rows in zip(split.users, split.valid_rows, split.test_rows, split.history("valid")):
        assert tiny.user[v] == u == tiny.user[t]
        assert split.positive[v] and split.positive[t]
        assert tiny.timestamp[v] <= tiny.timestamp[t]
        assert (tiny.timestamp[rows] <= cut_valid).all()
    with pytest.raises(ValueError):
        global_time_split(tiny, valid_frac=0.5, test_frac=0.5)


# --- invariants on random logs -------------------------------------------------------------------------------

@st.composite
def logs(draw: st.DrawFn) -> tuple[list[tuple], int]:
    n_users = draw(st.integers(1, 6))
    n = draw(st.integers(1, 60))
    rows = []
    for _ in range(n):
        rows.append((f"u{draw(st.integers(0, n_users - 1))}", f"i{draw(st.integers(0, 9))}", 1,
                     float(draw(st.integers(0, 8))),  # few distinct timestamps: many ties
                     draw(st.sampled_from([100, 9000])), 10000))
    return rows, draw(st.integers(2, 5))


@settings(max_examples=60, deadline=None)
@given(logs())
def test_leave_last_out_invariants(tmp_path_factory, data: tuple[list[tuple], int]) -> None:
    rows, min_positive = data
    folder = tmp_path_factory.mktemp("h")
    write_atomic(folder / "h.inter", INTER_HEADER, rows)
    ds = load_dataset(folder)
    split = leave_last_out(ds, min_positive=min_positive)
    key = list(zip(ds.timestamp, range(ds.n_interactions)))  # (timestamp, row) is event order
    pos_count = np.bincount(ds.user[split.positive], minlength=ds.n_users)
    np.testing.assert_array_equal(split.users, np.flatnonzero(pos_count >= min_positive))
    hist_valid, hist_test = split.history("valid"), split.history("test")
    for j, u in enumerate(split.users):
        v, t = split.valid_rows[j], split.test_rows[j]
        mine = [r for r in range(ds.n_interactions) if ds.user[r] == u]
        positives = sorted((key[r], r) for r in mine if split.positive[r])
        assert [r for _, r in positives[-2:]] == [v, t]
        assert [r for r in hist_valid[j]] == [r for _, r in sorted((key[r], r) for r in mine if key[r] < key[v])]
        assert [r for r in hist_test[j]] == [r for _, r in sorted((key[r], r) for r in mine if key[r] < key[t])]
        assert set(split.exclude_items("valid")[j]) == {ds.item[r] for r in hist_valid[j] if split.positive[r]}
    assert sorted(split.train_rows) == sorted(r for h in hist_valid for r in h)
    assert not set(split.train_rows) & (set(split.valid_rows) | set(split.test_rows))
