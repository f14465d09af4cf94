"""The live-watchers refinement of new films: its formula by hand, its strictness on a tiny log, its plumbing."""
from __future__ import annotations

import numpy as np
import pytest

from dreamstream.evaluation import cold_items as cold
from dreamstream.evaluation import live_refinement as live
from dreamstream.evaluation.baselines import Popularity
from dreamstream.evaluation.events import EventLog
from dreamstream.evaluation.groups import before_group
from dreamstream.evaluation.prequential import Histories, QuerySet, stream_queries
from dreamstream.evaluation.scorers import DreamUMMScorer

NEW = 3  # the new film of the tiny log


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_refined_vector_by_hand() -> None:
    """(1, 0, 0) - 0.4 (0, 1, 0) + 0.1 (0, 0, 3) = (1, -0.4, 0.3), norm sqrt(1.25)."""
    tower, m, watchers = np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([0, 0, 3.0])
    expected = np.array([1.0, -0.4, 0.3]) / np.sqrt(1.25)
    np.testing.assert_allclose(live.refined_vector(tower, m, watchers, beta0=0.4, gamma=0.1), expected, atol=1e-6)
    assert (live.BETA0, live.GAMMA) == (0.4, 0.1)  # the validated setting (docs/evaluation.md)
    np.testing.assert_allclose(live.refined_vector(tower, m, watchers), expected, atol=1e-6)
    both = live.refined_vector(tower, m, np.stack([np.zeros(3), watchers]))  # broadcasts over watcher sums
    np.testing.assert_allclose(both, [np.array([1.0, -0.4, 0]) / np.sqrt(1.16), expected], atol=1e-6)
    assert both.dtype == np.float32


def tiny_log() -> EventLog:
    """Nine events; film 3 is new (watched from event 4 on): by user 1 at t=10, user 2 at t=20, user 3 at t=30.

    Event 6 (user 0 at t=20) shares its second with user 2's watch; event 8
    (user 2 at t=40) has film 3 in its history, watched at t=20.
    """
    #                 0  1  2  3  4   5   6   7   8
    user = np.array([1, 2, 0, 3, 1, 2, 0, 3, 2])
    item = np.array([0, 1, 2, 0, 3, 3, 1, 3, 0])
    ts = np.array([5, 6, 7, 8, 10, 20, 20, 30, 40], np.float64)
    return EventLog(user, item, np.ones(9, np.float32), ts, 4, 5)


@pytest.fixture
def setup() -> tuple:
    log = tiny_log()
    rng = np.random.default_rng(0)
    items = _unit(rng.standard_normal((log.n_items, 4)))
    m_user = _unit(rng.standard_normal(4))
    qs = before_group(stream_queries(log, 4))
    cold_qs = cold.targeting(qs, np.array([NEW]))
    popularity = Popularity.fit(log.head(4))
    scorer = live.live_scorer(items, np.array([NEW]), cold_qs, m_user[None], popularity, float("inf"))
    return log, items, m_user, qs, scorer


def test_same_second_and_later_watchers_do_not_move_the_film(setup) -> None:
    """User 0's query at t=20 sees film 3 refined by user 1 (t=10) only: not user 2 (t=20), not user 3 (t=30)."""
    log, items, m_user, qs, scorer = setup
    q = int(np.flatnonzero(qs.queries == 6)[0])
    histories = Histories(log, [qs.seen[q]], None, qs.queries[q:q + 1])
    user = _unit(items[2])  # user 0's strict history: film 2
    watcher_1 = _unit(items[0])
    expected = live.refined_vector(items[NEW], m_user, watcher_1)
    assert scorer.scores(histories)[0, NEW] == pytest.approx(float(user @ expected), abs=1e-6)
    leaky = live.refined_vector(items[NEW], m_user, watcher_1 + _unit(items[1]))  # user 2's same-second watch
    assert abs(float(user @ leaky) - float(user @ expected)) > 1e-3, "the check would not see the leak"
    warm = np.setdiff1d(np.arange(log.n_items), [NEW])  # the other films are the tower space's
    np.testing.assert_allclose(scorer.scores(histories)[0, warm], items[warm] @ user, atol=1e-6)


def test_history_event_uses_the_films_vector_at_its_own_time(setup) -> None:
    """User 2 watched film 3 at t=20: in their vector at t=40 it is the version after user 1 only (not their own watch)."""
    log, items, m_user, qs, scorer = setup
    q = int(np.flatnonzero(qs.queries == 8)[0])
    histories = Histories(log, [qs.seen[q]], None, qs.queries[q:q + 1])
    assert list(log.item[qs.seen[q]]) == [1, NEW]
    at_watch = live.refined_vector(items[NEW], m_user, _unit(items[0]))
    np.testing.assert_allclose(scorer.users(histories)[0], _unit(items[1] + at_watch), atol=1e-6)
    # at t=40 the film itself has three watchers (users 1, 2, 3), each with their strict vector
    now = live.refined_vector(items[NEW], m_user, _unit(items[0]) + _unit(items[1]) + _unit(items[0]))
    np.testing.assert_allclose(scorer.versions.vectors[scorer.versions.grid(np.array([40.0]))[0, 0]], now, atol=1e-6)


def test_cold_queries_must_be_every_watch_of_the_new_films(setup) -> None:
    log, items, m_user, qs, _ = setup
    partial = cold.targeting(qs, np.array([NEW]))
    partial = QuerySet(log, partial.queries[1:], partial.seen[1:], partial.masked[1:])
    with pytest.raises(ValueError, match="exactly the new films' events"):
        live.live_scorer(items, np.array([NEW]), partial, m_user[None], Popularity.fit(log), float("inf"))


def test_without_refinement_it_is_the_tower_row(log) -> None:
    """beta0 = gamma = 0: every version is the tower's vector, so the scores are DreamUMM's over the tower space."""
    new = cold.cold_items(log.n_items, share=0.2)
    kept, cut = cold.without_cold_past(log, new, len(log) // 2)
    qs = before_group(stream_queries(kept, cut))
    rng = np.random.default_rng(3)
    items = _unit(rng.standard_normal((log.n_items, 6)))
    popularity = Popularity.fit(kept.head(cut))
    users = _unit(rng.standard_normal((20, 6)))
    off = live.live_scorer(items, new, cold.targeting(qs, new), users, popularity, 3600.0, beta0=0.0, gamma=0.0)
    tower = DreamUMMScorer(items, popularity, 3600.0)
    assert np.isin(kept.item[np.concatenate(qs.seen)], new).any(), "no history holds a new film: proves nothing"
    histories = Histories(kept, qs.seen, None, qs.queries)
    np.testing.assert_allclose(off.scores(histories), tower.scores(histories), atol=1e-5)
    on = live.live_scorer(items, new, cold.targeting(qs, new), users, popularity, 3600.0)
    assert not np.allclose(on.scores(histories)[:, new], tower.scores(histories)[:, new], atol=1e-3)
