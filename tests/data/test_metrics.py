"""Full-sort top-k and the ranking metrics on cases small enough to compute by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dreamstream.data.metrics import full_sort_topk, popularity_topk, topk_metrics


def test_topk_by_inner_product_with_masks() -> None:
    items = np.array([[1, 0], [0, 1], [1, 1], [-1, 0], [2, 0]], np.float32)
    users = np.array([[1, 0], [0, 1]], np.float32)
    top = full_sort_topk(users, items, [np.array([4]), np.array([], np.int64)], k=3)
    # user 0 scores 1, 0, 1, -1, (2 masked): ties between items 0 and 2 go to the lower index
    np.testing.assert_array_equal(top, [[0, 2, 1], [1, 2, 0]])
    assert top.dtype == np.int64


def test_topk_pads_when_the_catalogue_runs_out() -> None:
    top = full_sort_topk(np.ones((1, 1), np.float32), np.array([[3], [1], [2]], np.float32), [np.array([0])], k=4)
    np.testing.assert_array_equal(top, [[2, 1, -1, -1]])


def test_topk_batches_agree_with_one_batch() -> None:
    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(37, 8)), rng.normal(size=(200, 8))
    exclude = [rng.choice(200, size=rng.integers(0, 20), replace=False) for _ in range(37)]
    np.testing.assert_array_equal(full_sort_topk(users, items, exclude, 15, batch=7),
                                  full_sort_topk(users, items, exclude, 15, batch=1024))


@settings(max_examples=50, deadline=None)
@given(arrays(np.float32, (4, 12), elements=st.sampled_from([0.0, 1.0, 2.0, 0.5])), st.integers(1, 12))
def test_topk_matches_a_stable_full_sort(scores: np.ndarray, k: int) -> None:
    """Many ties: the result must still be exactly 'best first, lower index on ties'."""
    top = full_sort_topk(scores, np.eye(12, dtype=np.float32), [np.array([], np.int64)] * 4, k)
    np.testing.assert_array_equal(top, np.argsort(-scores, axis=1, kind="stable")[:, :k])


def test_metrics_by_hand() -> None:
    topk = np.array([[5, 3, 9], [1, 2, 4], [7, 8, 0]])
    targets = np.array([5, 4, 6])  # rank 0, rank 2, miss
    m = topk_metrics(topk, targets, ks=(1, 3))
    assert m["recall@1"] == pytest.approx(1 / 3) and m["hitrate@1"] == pytest.approx(1 / 3)
    assert m["ndcg@1"] == pytest.approx(1 / 3)
    assert m["recall@3"] == pytest.approx(2 / 3)
    assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / 3)
    assert set(m) == {f"{name}@{k}" for name in ("recall", "ndcg", "hitrate") for k in (1, 3)}


def test_metrics_refuse_short_lists_and_mismatched_targets() -> None:
    with pytest.raises(ValueError, match="k >= 50"):
        topk_metrics(np.zeros((2, 5), np.int64), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="one target per"):
        topk_metrics(np.zeros((2, 50), np.int64), np.zeros(3, np.int64))


def test_popularity_ranks_by_training_count_and_masks() -> None:
    train_items = np.array([3, 3, 3, 1, 1, 4])
    top = popularity_topk(train_items, n_items=5, exclude=[np.array([3]), np.array([], np.int64)], k=3)
    np.testing.assert_array_equal(top, [[1, 4, 0], [3, 1, 4]])
