"""OPAL prequential scorers: shapes, the served mode against the client's own functions, popularity fallback."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dreamstream.client import user_queries
from dreamstream.dreamumm_ref import user_vector
from dreamstream.evaluation.baselines import Popularity
from dreamstream.evaluation.events import EventLog
from dreamstream.evaluation.opal_scorers import MODES, UNRANKED, OpalScorer, prefix_groups
from dreamstream.evaluation.prequential import Histories, evaluate_stream
from dreamstream.merge import merge_by_score
from models.opal import Opal, OpalConfig, OpalState

D, K, N_ITEMS, N_USERS = 8, 3, 40, 6


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def world() -> tuple[EventLog, np.ndarray, Opal]:
    rng = np.random.default_rng(0)
    n = 120
    # the per-event value column is ``weight`` (engagement) in newer logs, ``rating`` in older ones
    value = "weight" if "weight" in EventLog.__dataclass_fields__ else "rating"
    log = EventLog(user=rng.integers(0, N_USERS, n).astype(np.int64), item=rng.integers(0, N_ITEMS, n).astype(np.int64),
                   ts=np.arange(n, dtype=np.float64), n_users=N_USERS, n_items=N_ITEMS, **{value: np.ones(n, np.float32)})
    items = rng.standard_normal((N_ITEMS, D)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    torch.manual_seed(0)
    model = Opal(OpalConfig(dim=D, interests=K, hidden=5)).eval()
    return log, items, model


def _histories(log: EventLog, rows: list[np.ndarray]) -> Histories:
    return Histories(log, rows, [np.unique(log.item[r]) for r in rows])


def _user_rows(log: EventLog, user: int, n: int) -> np.ndarray:
    return np.flatnonzero(log.user == user)[:n]


def _stepped(model: Opal, items: np.ndarray, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interests and weights after stepping ``Opal.step`` event by event, as the worker does."""
    state = model.empty_state(1)
    with torch.no_grad():
        for i in history:
            out = model.step(torch.from_numpy(items[i:i + 1]), *state, decay=torch.ones(1, 1))
            state = OpalState(out.hidden_out, out.global_out, out.soft_out)
    return out.interests[0].numpy(), out.weights[0].numpy()


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_scores_the_whole_catalogue(world, mode: str) -> None:
    log, items, model = world
    pop = Popularity.fit(log)
    rows = [_user_rows(log, 0, 5), _user_rows(log, 1, 9), np.zeros(0, np.int64), _user_rows(log, 0, 2)]
    scores = OpalScorer(model, items, pop, mode=mode).scores(_histories(log, rows))
    assert scores.shape == (4, N_ITEMS) and scores.dtype == np.float32
    assert np.isfinite(scores).all()


@pytest.mark.parametrize("mode", MODES)
def test_empty_history_gets_the_popularity_counts(world, mode: str) -> None:
    log, items, model = world
    pop = Popularity.fit(log.head(60))
    scores = OpalScorer(model, items, pop, mode=mode).scores(_histories(log, [np.zeros(0, np.int64), _user_rows(log, 2, 4)]))
    np.testing.assert_array_equal(scores[0], pop.counts)
    assert not np.array_equal(scores[1], pop.counts)


def test_max_mode_is_the_best_interest_of_the_streamed_state(world) -> None:
    log, items, model = world
    rows = [_user_rows(log, 3, 7), _user_rows(log, 4, 3)]
    scores = OpalScorer(model, items, Popularity.fit(log), mode="max").scores(_histories(log, rows))
    for q, r in enumerate(rows):
        interests, _ = _stepped(model, items, log.item[r])
        np.testing.assert_allclose(scores[q], (interests @ items.T).max(axis=0), rtol=1e-5, atol=1e-5)


def test_max_plus_user_adds_the_dreamumm_vector(world) -> None:
    log, items, model = world
    r = _user_rows(log, 5, 8)
    scores = OpalScorer(model, items, Popularity.fit(log), mode="max+user").scores(_histories(log, [r]))
    interests, _ = _stepped(model, items, log.item[r])
    _, user = user_vector(items[log.item[r]], np.ones(r.size, np.float32))
    expected = np.vstack([user, interests]) @ items.T
    np.testing.assert_allclose(scores[0], expected.max(axis=0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("user_share", [0.0, 0.3, 0.7])
def test_quota_mode_is_the_previous_clients_quota_merge_of_a_published_record(world, user_share: float) -> None:
    log, items, model = world
    k = 10
    rows = [_user_rows(log, u, n) for u, n in [(0, 12), (1, 6), (0, 4), (2, 1)]]
    h = _histories(log, rows)
    scores = OpalScorer(model, items, Popularity.fit(log), mode="quota", user_share=user_share, k=k).scores(h)
    for q, r in enumerate(rows):
        interests, weights = _stepped(model, items, log.item[r])
        _, user = user_vector(items[log.item[r]], np.ones(r.size, np.float32))
        record = {"vector": user, "interests": interests, "interest_weights": weights.tolist()}
        queries, qw = user_queries(record, D, user_share)
        blocked = set(h.exclude[q].tolist())
        full = queries @ items.T  # what Retriever.search fetches: the k + len(blocked) best per query
        ids = [list(np.argsort(-row, kind="stable")[:k + len(blocked)]) for row in full]
        merged = merge_by_score(ids, [row[i] for row, i in zip(full, ids)], qw, k, exclude=blocked)
        expected = [int(item) for item, _ in merged]
        ranked = np.argsort(-scores[q], kind="stable")[:len(expected)]
        assert ranked.tolist() == expected
        assert (scores[q][np.setdiff1d(np.arange(N_ITEMS), expected)] == UNRANKED).all()


def test_merge_mode_is_the_quota_merge_over_interests_alone(world) -> None:
    log, items, model = world
    k = 12
    r = _user_rows(log, 1, 10)
    h = _histories(log, [r])
    scores = OpalScorer(model, items, Popularity.fit(log), mode="merge", k=k).scores(h)
    interests, weights = _stepped(model, items, log.item[r])
    full = interests @ items.T
    blocked = set(h.exclude[0].tolist())
    ids = [list(np.argsort(-row, kind="stable")[:k + len(blocked)]) for row in full]
    merged = merge_by_score(ids, [row[i] for row, i in zip(full, ids)], weights / weights.sum(), k, exclude=blocked)
    assert np.argsort(-scores[0], kind="stable")[:k].tolist() == [int(i) for i, _ in merged]


def test_queries_of_one_user_share_one_unroll_and_match_single_queries(world) -> None:
    log, items, model = world
    rows = [_user_rows(log, 0, n) for n in (3, 10, 1, 7)] + [_user_rows(log, 2, 5)]
    sequences, reads, at = prefix_groups(_histories(log, rows), None)
    assert len(sequences) == 2 and at.tolist() == [3, 10, 1, 7, 5]
    scorer = OpalScorer(model, items, Popularity.fit(log), mode="max")
    together = scorer.scores(_histories(log, rows))
    for q, r in enumerate(rows):
        np.testing.assert_allclose(together[q], scorer.scores(_histories(log, [r]))[0], rtol=1e-5, atol=1e-6)


def test_positive_mask_keeps_skips_out_of_opal_but_not_out_of_history(world) -> None:
    log, items, model = world
    r = _user_rows(log, 4, 8)
    positive = np.ones(len(log), bool)
    positive[r[::2]] = False
    scorer = OpalScorer(model, items, Popularity.fit(log), mode="max", positive=positive)
    scores = scorer.scores(_histories(log, [r]))
    interests, _ = _stepped(model, items, log.item[r[1::2]])
    np.testing.assert_allclose(scores[0], (interests @ items.T).max(axis=0), rtol=1e-5, atol=1e-5)


def test_scorers_run_under_the_prequential_protocol(world) -> None:
    log, items, model = world
    pop = Popularity.fit(log.head(80))
    for mode in MODES:
        result = evaluate_stream(log, 80, OpalScorer(model, items, pop, mode=mode), batch=16)
        assert result.rank.shape == (40,)
        assert 0 <= result.metrics()["hitrate@20"] <= 1


def test_unknown_mode_is_refused(world) -> None:
    log, items, model = world
    with pytest.raises(ValueError, match="mode"):
        OpalScorer(model, items, Popularity.fit(log), mode="mean")


def test_item_vectors_are_used_as_given(world) -> None:
    """The scorer searches the vectors it is handed (the index's unit rows); no renormalisation sneaks in."""
    log, items, model = world
    r = _user_rows(log, 3, 5)
    scaled = OpalScorer(model, 2 * items, Popularity.fit(log), mode="max").scores(_histories(log, [r]))
    interests, _ = _stepped(model, 2 * items, log.item[r])
    np.testing.assert_allclose(scaled[0], (interests @ (2 * items).T).max(axis=0), rtol=1e-5, atol=1e-5)


def test_served_mode_is_what_the_client_ranks_for_the_published_record(world, tmp_path) -> None:
    """The evaluation's served row and dreamstream.client.rank agree on every query's top k (history excluded)."""
    from dreamstream.client import load_version, rank
    from dreamstream.index.builder import BuildParams, build_version
    from dreamstream.index.publish import install
    from dreamstream.index.store import ItemStore

    log, items, model = world
    store = ItemStore(shards=2)
    store.put_many([str(i) for i in range(N_ITEMS)], items)
    built = build_version(store, tmp_path, BuildParams())
    install(built, tmp_path)
    version = load_version(tmp_path, built.manifest.version)
    k = 10
    rows = [_user_rows(log, u, n) for u, n in [(0, 12), (1, 6), (0, 4), (2, 1)]]
    h = _histories(log, rows)
    scores = OpalScorer(model, items, Popularity.fit(log), mode="served").scores(h)
    for q, r in enumerate(rows):
        interests, weights = _stepped(model, items, log.item[r])
        _, user = user_vector(items[log.item[r]], np.ones(r.size, np.float32))
        record = {"vector": user, "interests": interests, "interest_weights": weights.tolist()}
        blocked = set(h.exclude[q].tolist())
        served = [int(i) for i, _ in rank(version, record, k, exclude=[str(b) for b in blocked])]
        masked = scores[q].copy()
        masked[list(blocked)] = -np.inf
        assert served == np.argsort(-masked, kind="stable")[:k].tolist()
