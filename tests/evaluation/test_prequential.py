"""The prequential scorer against a brute-force loop, and the metrics against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dreamstream.evaluation.baselines import Popularity, ease, item_knn
from dreamstream.evaluation.events import EventLog
from dreamstream.evaluation.prequential import BUCKETS, PrequentialResult, evaluate_stream, stream_queries
from rank_ranges import assert_ranks_within, rank_range


def test_metrics_match_hand_computed_values() -> None:
    # ranks 0, 3, 15, 60 (miss), 9: hits@10 = 3/5 ... ndcg = 1/log2(rank+2)
    result = PrequentialResult(np.array([0, 3, 15, 50, 9]), np.array([0, 2, 7, 9, 1]))
    m = result.metrics()
    assert m["hitrate@10"] == pytest.approx(3 / 5)
    assert m["hitrate@20"] == pytest.approx(4 / 5)
    assert m["hitrate@50"] == pytest.approx(4 / 5)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(5) + 1 / math.log2(11)) / 5)
    assert m["ndcg@20"] == pytest.approx((1 + 1 / math.log2(5) + 1 / math.log2(11) + 1 / math.log2(17)) / 5)
    buckets = result.by_bucket()
    assert buckets["0"]["events"] == 1 and buckets["0"]["hitrate@10"] == 1.0
    assert buckets["1-4"]["events"] == 2 and buckets["1-4"]["hitrate@10"] == pytest.approx(1.0)
    assert buckets[">=5"]["events"] == 2 and buckets[">=5"]["hitrate@20"] == pytest.approx(0.5)
    assert set(buckets) == set(BUCKETS)


def brute_force_ranks(log: EventLog, cutoff: int, scorer, frozen: bool) -> tuple[list[tuple[int, int]], list[int]]:
    """One event at a time, histories found by scanning the log: the protocol as a reader would write it (ranks as ranges)."""
    from dreamstream.evaluation.prequential import Histories

    ranks, priors = [], []
    for e in range(cutoff, len(log)):
        earlier = [r for r in range(e) if log.user[r] == log.user[e]]
        seen = [r for r in earlier if r < cutoff] if frozen else earlier
        scores = scorer.scores(Histories(log, [np.array(seen, np.int64)]))[0]
        ranks.append(rank_range(scores, {int(log.item[r]) for r in earlier}, int(log.item[e])))
        priors.append(len(earlier))
    return ranks, priors


@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("build", [lambda past: item_knn(past), lambda past: ease(past, 10.0), Popularity.fit])
def test_prequential_scorer_equals_a_brute_force_loop(log: EventLog, frozen: bool, build) -> None:
    cutoff = log.cut_at_fraction(0.6)
    scorer = build(log.head(cutoff))
    fast = evaluate_stream(log, cutoff, scorer, frozen=frozen, batch=7)
    ranks, priors = brute_force_ranks(log, cutoff, scorer, frozen)
    assert_ranks_within(fast.rank.tolist(), ranks)
    assert fast.prior.tolist() == priors


def test_queries_see_the_future_before_them_unless_frozen(log: EventLog) -> None:
    cutoff = log.cut_at_fraction(0.5)
    live, frozen = stream_queries(log, cutoff), stream_queries(log, cutoff, frozen=True)
    assert all((s < q).all() for s, q in zip(live.seen, live.queries))
    assert all((s < cutoff).all() for s in frozen.seen)
    assert [m.tolist() for m in live.masked] == [m.tolist() for m in frozen.masked]
    assert any(len(a) > len(b) for a, b in zip(live.seen, frozen.seen))


def test_cut_never_splits_a_timestamp() -> None:
    ts = np.array([1, 2, 2, 2, 3, 4], np.float64)
    log = EventLog(np.zeros(6, np.int64), np.arange(6), np.ones(6, np.float32), ts, 1, 6)
    assert log.cut_at_fraction(0.5) == 1  # the event at index 3 shares second 2 with indexes 1-2
    assert log.cut_at_time(3.0) == 4
