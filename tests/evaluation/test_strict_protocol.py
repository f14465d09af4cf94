"""The strict protocol's group rule against a brute-force loop, and the decayed item-item baselines."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dreamstream.engagement import decay
from dreamstream.evaluation.baselines import DECAY_GRID, Popularity, ease, item_knn, tune
from dreamstream.evaluation.events import EventLog
from dreamstream.evaluation.groups import before_group, tied_share
from dreamstream.evaluation.prequential import Histories, evaluate_queries, stream_queries
from dreamstream.evaluation.protocols import prequential
from rank_ranges import assert_ranks_within, rank_range


def tied_log(n_users: int = 8, n_items: int = 25, n_events: int = 200, seed: int = 1) -> EventLog:
    """Events in pages: runs of one user's events share a second, as MovieLens writes them."""
    rng = np.random.default_rng(seed)
    user = np.repeat(rng.integers(0, n_users, n_events // 4), 4)[:n_events]
    ts = np.cumsum(np.where(rng.random(n_events) < 0.5, 0, rng.integers(1, 900, n_events))).astype(np.float64)
    item = rng.integers(0, n_items, n_events)
    return EventLog(user, item, np.ones(n_events, np.float32), ts, n_users, n_items)


def brute_force(log: EventLog, cutoff: int, scorer) -> list[tuple[int, int]]:
    """Per event from ``cutoff``: ranked from the user's events strictly earlier in time, by scanning the log (ranges)."""
    ranks = []
    for e in range(cutoff, len(log)):
        before = [r for r in range(len(log)) if log.user[r] == log.user[e] and log.ts[r] < log.ts[e]]
        scores = scorer.scores(Histories(log, [np.array(before, np.int64)]))[0]
        ranks.append(rank_range(scores, {int(log.item[r]) for r in before}, int(log.item[e])))
    return ranks


@pytest.mark.parametrize("half_life", [math.inf, 300.0])
def test_strict_queries_equal_a_brute_force_loop(half_life: float) -> None:
    log = tied_log()
    cutoff = log.cut_at_fraction(0.5)
    scorer = item_knn(log.head(cutoff))
    scorer.half_life_s = half_life
    lenient = stream_queries(log, cutoff)
    strict = before_group(lenient)
    assert_ranks_within(evaluate_queries(strict, scorer, batch=5).rank.tolist(), brute_force(log, cutoff, scorer))
    assert tied_share(lenient) > 0.3 and tied_share(strict) == 0.0
    # a group is applied at once: every event of one user's second sees the same history
    for a in range(len(strict)):
        b = a + 1
        if b < len(strict) and log.user[strict.queries[a]] == log.user[strict.queries[b]] \
                and log.ts[strict.queries[a]] == log.ts[strict.queries[b]]:
            assert strict.seen[a].tolist() == strict.seen[b].tolist()


def test_protocols_are_strict_unless_lenient() -> None:
    log = tied_log()
    cutoff = log.cut_at_fraction(0.6)
    strict, lenient = prequential(log, cutoff), prequential(log, cutoff, strict=False)
    assert all((log.ts[s] < log.ts[q]).all() for s, q in zip(strict.test.seen, strict.test.queries))
    assert all((log.ts[s] < log.ts[q]).all() for s, q in zip(strict.valid.seen, strict.valid.queries))
    assert any((log.ts[s] == log.ts[q]).any() for s, q in zip(lenient.test.seen, lenient.test.queries))
    assert strict.describe["grouping"].startswith("strict") and lenient.describe["grouping"].startswith("lenient")


def test_development_scores_the_validation_window_and_final_the_test_window() -> None:
    log = tied_log()
    cutoff = log.cut_at_fraction(0.6)
    dev, final = prequential(log, cutoff, final=False), prequential(log, cutoff, final=True)
    assert dev.test.queries.tolist() == dev.valid.queries.tolist() and dev.refit_log is None
    assert dev.test.queries.max() < cutoff <= final.test.queries.min()


def test_decayed_history_weighs_each_item_by_its_latest_event() -> None:
    ts = np.array([0.0, 100.0, 200.0, 300.0])
    log = EventLog(np.zeros(4, np.int64), np.array([0, 1, 0, 2]), np.ones(4, np.float32), ts, 1, 3)
    knn = item_knn(log)
    knn.half_life_s = 100.0
    h = Histories(log, [np.arange(4)])
    expected = np.array([decay(100_000.0, 100.0), decay(200_000.0, 100.0), 1.0]) @ knn.matrix
    assert knn.scores(h)[0] == pytest.approx(expected, rel=1e-5)
    knn.half_life_s = math.inf
    assert knn.scores(h)[0] == pytest.approx(np.ones(3) @ knn.matrix, rel=1e-6)


def test_decay_is_chosen_on_validation_with_the_other_hyperparameters() -> None:
    log = tied_log(n_events=400)
    cutoff = log.cut_at_fraction(0.7)
    protocol = prequential(log, cutoff)
    tuned = tune(ease, [{"lam": 10.0}, {"lam": 100.0}], protocol.fit_log, protocol.valid, protocol.refit_log, DECAY_GRID)
    assert len(tuned.grid) == 2 * len(DECAY_GRID) and tuned.params["half_life_s"] in DECAY_GRID
    best = max(tuned.grid, key=lambda row: row["hitrate@20"])
    assert tuned.params == best["params"] and tuned.scorer.half_life_s == tuned.params["half_life_s"]
    assert isinstance(tuned.scorer.popularity, Popularity)
