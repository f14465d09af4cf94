"""SASRec as a prequential scorer, on hand-built logs small enough to train in about a second.

The logs follow a rule a sequential model must find and a bag-of-items model
cannot: every user walks the catalogue in order, item i always followed by
item i + 1 (mod the catalogue), from a random start.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from dreamstream.evaluation import sasrec
from dreamstream.evaluation.baselines import SELECT_ON, Popularity
from dreamstream.evaluation.events import EventLog
from dreamstream.evaluation.prequential import Histories, stream_queries
from dreamstream.evaluation.sasrec import (SasRecConfig, fit_sasrec, fit_sasrec_on, left_pad, training_windows,
                                          tune_sasrec)

TINY = SasRecConfig(max_len=8, dim=32, blocks=1, heads=1, dropout=0.1, lr=1e-2, batch_size=32, max_epochs=25,
                    patience=3, refit=False)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> None:
    """The machine's two cores are shared: one intra-op thread is faster than two fighting other processes."""
    torch.set_num_threads(1)


def walk_log(n_users: int = 150, n_items: int = 100, length: int = 12, seed: int = 0) -> EventLog:
    """Each user walks ``start, start+1, ...`` (mod ``n_items``); users take their k-th step in round k."""
    rng = np.random.default_rng(seed)
    start = rng.integers(n_items, size=n_users)
    step = np.arange(length)
    user = np.repeat(np.arange(n_users), length)
    item = (start[:, None] + step[None, :]).ravel() % n_items
    ts = (step[None, :] * n_users + np.arange(n_users)[:, None]).ravel().astype(np.float64)
    order = np.argsort(ts, kind="stable")
    return EventLog(user[order].astype(np.int64), item[order].astype(np.int64), np.ones(user.size, np.float32),
                    ts[order], n_users, n_items)


@pytest.fixture(scope="module")
def walks() -> tuple[EventLog, int, EventLog, int]:
    """(log, test cut, past, validation cut inside the past), as the evaluate protocol splits them."""
    log = walk_log()
    cut = log.cut_at_fraction(0.75)
    past = log.head(cut)
    return log, cut, past, past.cut_at_fraction(0.8)


@pytest.fixture(scope="module")
def fitted(walks: tuple[EventLog, int, EventLog, int]) -> sasrec.SasRec:
    _, _, past, vcut = walks
    return fit_sasrec(past, vcut, TINY, seed=0)


def stream_histories(log: EventLog, cutoff: int) -> tuple[Histories, np.ndarray]:
    qs = stream_queries(log, cutoff)
    return Histories(log, qs.seen, qs.masked), log.item[qs.queries]


def test_learns_the_next_item(walks: tuple[EventLog, int, EventLog, int]) -> None:
    """Trained for a fixed 15 epochs, the top-1 of every streamed query is the next step, unmasked."""
    log, cut, past, _ = walks
    model = sasrec.SasRec(sasrec.train_for(past, TINY, seed=0, epochs=15), Popularity.fit(past), TINY)
    histories, targets = stream_histories(log, cut)
    assert (model.scores(histories).argmax(axis=1) == targets).mean() > 0.95


def test_early_stopped_fit_validates_well(fitted: sasrec.SasRec) -> None:
    assert 1 <= fitted.best_epoch <= len(fitted.history) <= TINY.max_epochs
    best = fitted.history[fitted.best_epoch - 1][SELECT_ON]
    assert best == max(h[SELECT_ON] for h in fitted.history) and best > 0.9


def test_scores_shape_and_empty_history_is_popularity(walks: tuple[EventLog, int, EventLog, int],
                                                      fitted: sasrec.SasRec) -> None:
    log, cut, past, _ = walks
    rows = [np.array([], np.int64), np.flatnonzero(log.user == 3)[:5], np.array([], np.int64),
            np.flatnonzero(log.user == 7)[:11]]  # 11 > max_len: only the last 8 are read
    scores = fitted.scores(Histories(log, rows))
    assert scores.shape == (4, log.n_items) and scores.dtype == np.float32
    counts = Popularity.fit(past).counts
    np.testing.assert_array_equal(scores[0], counts)
    np.testing.assert_array_equal(scores[2], counts)
    assert not np.array_equal(scores[1], counts)
    truncated = fitted.scores(Histories(log, [rows[3][-TINY.max_len:]]))
    np.testing.assert_allclose(scores[3], truncated[0], rtol=1e-5, atol=1e-5)


def test_batches_do_not_change_scores(walks: tuple[EventLog, int, EventLog, int], fitted: sasrec.SasRec) -> None:
    """Histories of mixed lengths padded together score as they do alone."""
    log, cut, _, _ = walks
    histories, _ = stream_histories(log, cut)
    some = Histories(log, histories.rows[:40])
    together = fitted.scores(some)
    alone = np.concatenate([fitted.scores(Histories(log, [r])) for r in some.rows])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-4)


def test_last_hidden_is_the_last_position_of_forward(fitted: sasrec.SasRec) -> None:
    net = fitted.net.eval()
    seq = torch.from_numpy(left_pad([np.array([1, 2, 3]), np.arange(8), np.array([5])], net.pad))
    with torch.no_grad():
        torch.testing.assert_close(net.last_hidden(seq), net(seq)[:, -1], rtol=1e-5, atol=1e-5)


def test_left_pad_keeps_the_last_items_right_aligned() -> None:
    padded = left_pad([np.array([1, 2, 3, 4, 5]), np.array([7]), np.array([], np.int64)], pad=9, length=3)
    np.testing.assert_array_equal(padded, [[3, 4, 5], [9, 9, 7], [9, 9, 9]])
    np.testing.assert_array_equal(left_pad([np.array([1, 2]), np.array([7])], pad=9), [[1, 2], [9, 7]])


def test_windows_make_every_later_event_a_target_once() -> None:
    log = walk_log(n_users=3, n_items=40, length=23)
    windows = training_windows(log, max_len=8)
    assert windows.shape[1] == 9
    inputs, targets = windows[:, :-1], windows[:, 1:]
    kept = (inputs != log.n_items) & (targets != log.n_items)
    assert kept.sum() == 3 * 22
    pairs = sorted(zip(inputs[kept].tolist(), targets[kept].tolist()))
    expected = sorted((int(a), int(b)) for rows in log.sequences() for a, b in zip(log.item[rows][:-1], log.item[rows][1:]))
    assert pairs == expected


class Scripted:
    """Stands in for evaluate_queries: returns the next scripted HitRate@20, and keeps each epoch's weights."""

    def __init__(self, values: list[float]):
        self.values, self.states = list(values), []

    def __call__(self, valid, scorer):
        self.states.append({k: v.clone() for k, v in scorer.net.state_dict().items()})
        value = self.values[len(self.states) - 1]
        return type("R", (), {"metrics": lambda _self: {SELECT_ON: value, "ndcg@20": value / 2}})()


def test_early_stopping_restores_the_best_epoch_and_refits_for_as_many(
        walks: tuple[EventLog, int, EventLog, int], monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, past, vcut = walks
    script = Scripted([0.1, 0.3, 0.2, 0.25, 0.29, 0.9])
    monkeypatch.setattr(sasrec, "evaluate_queries", script)
    epochs = []
    real_epoch = sasrec.train_epoch
    monkeypatch.setattr(sasrec, "train_epoch", lambda *a: epochs.append(1) or real_epoch(*a))
    kept = fit_sasrec(past, vcut, replace(TINY, refit=False), seed=0)
    assert kept.best_epoch == 2 and not kept.refitted
    assert [h[SELECT_ON] for h in kept.history] == [0.1, 0.3, 0.2, 0.25, 0.29]  # stopped 3 epochs after the best
    for name, value in kept.net.state_dict().items():
        torch.testing.assert_close(value, script.states[1][name])

    script.states.clear()
    epochs.clear()
    refitted = fit_sasrec(past, vcut, replace(TINY, refit=True), seed=0)
    assert refitted.refitted and refitted.best_epoch == 2
    assert len(epochs) == 5 + 2  # early stopping, then from scratch on the whole past for the best epoch count
    np.testing.assert_array_equal(refitted.popularity.counts, Popularity.fit(past).counts)


def test_tune_picks_the_best_validation_point(walks: tuple[EventLog, int, EventLog, int]) -> None:
    log, cut, past, vcut = walks
    grid = [{"lr": 1e-5, "max_epochs": 2}, {"lr": 1e-2}]  # the first cannot learn in two epochs
    tuned = tune_sasrec(past.head(vcut), stream_queries(past, vcut), past, grid, base=TINY, seed=0)
    assert tuned.params == grid[1]
    assert [row["params"] for row in tuned.grid] == grid
    assert tuned.grid[1][SELECT_ON] > tuned.grid[0][SELECT_ON]
    assert tuned.scorer.scores(Histories(log, [np.flatnonzero(log.user == 0)[:4]])).shape == (1, log.n_items)
    assert not tuned.scorer.refitted  # TINY says refit=False


def test_no_refit_log_keeps_the_early_stopped_net(walks: tuple[EventLog, int, EventLog, int]) -> None:
    """Leave-last-out has nothing to refit on: the early-stopped net is served, with the fit log's popularity."""
    _, _, past, vcut = walks
    fit_log = past.head(vcut)
    model = fit_sasrec_on(fit_log, stream_queries(past, vcut), None, replace(TINY, refit=True, max_epochs=2), seed=0)
    assert not model.refitted
    np.testing.assert_array_equal(model.popularity.counts, Popularity.fit(fit_log).counts)
