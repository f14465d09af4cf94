"""Multi-interest retrieval helpers of `evaluate`: quota merge over several queries, subsets."""
from __future__ import annotations

import numpy as np

from dreamstream.commands.evaluate import max_over_queries, metrics_of, multi_interest_rows, multi_query, single_query


def test_two_interests_retrieve_both_clusters_where_one_mean_vector_finds_neither() -> None:
    rng = np.random.default_rng(0)
    a, b = np.eye(8)[0], np.eye(8)[1]
    noise = lambda n: 0.15 * rng.standard_normal((n, 8))  # noqa: E731
    decoys = np.tile((a + b) / np.sqrt(2), (30, 1)) + 0.05 * rng.standard_normal((30, 8))  # near the mean, not liked
    items = np.vstack([a + noise(8), b + noise(8), decoys]).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    targets = np.array([5, 12])  # one user likes cluster a's item 5, another cluster b's item 12
    interests = np.stack([np.stack([a, b])] * 2).astype(np.float32)  # [U=2, Q=2, D]
    weights = np.full((2, 2), 0.5)
    exclude = [np.array([], np.int64)] * 2
    mean = single_query(interests.mean(axis=1), items, exclude)
    merged = multi_query(interests, weights, items, exclude)
    assert metrics_of(merged, targets)["recall@20"] > metrics_of(mean, targets)["recall@20"]
    assert metrics_of(max_over_queries(interests, items, exclude), targets)["recall@20"] == 1.0
    # masked items never come back
    masked = multi_query(interests, weights, items, [np.array([5]), np.array([12])])
    assert 5 not in masked[50][0] and 12 not in masked[50][1]


def test_multi_interest_rows_need_two_interests_with_mass() -> None:
    counts = np.array([[10, 0, 0, 0], [6, 4, 0, 0], [9, 1, 0, 0], [3, 3, 3, 3]])
    assert multi_interest_rows(counts).tolist() == [1, 3]
