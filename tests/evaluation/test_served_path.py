"""The offline served row is the streamed number: DreamUMM readout == the worker's reference, and the
client's search over a real Faiss index version returns the evaluation's ranking."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dreamstream.client import load_version
from dreamstream.dreamumm_ref import user_vector
from dreamstream.evaluation.baselines import Popularity
from dreamstream.evaluation.prequential import Histories, stream_queries
from dreamstream.evaluation.scorers import DreamUMMScorer
from dreamstream.index.builder import BuildParams, build_version
from dreamstream.index.publish import install
from dreamstream.index.store import ItemStore


def unit_items(n: int, d: int, seed: int = 1) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("half_life_s", [math.inf, 3.0])
def test_readout_equals_the_worker_reference(log, half_life_s: float) -> None:
    items = unit_items(log.n_items, 8)
    scorer = DreamUMMScorer(items, Popularity.fit(log), half_life_s)
    qs = stream_queries(log, log.cut_at_fraction(0.5))
    users = scorer.users(Histories(log, qs.seen))
    for q, rows in enumerate(qs.seen):
        _, expected = user_vector(items[log.item[rows]], log.weight[rows], log.ts[rows] * 1000.0, half_life_s)
        np.testing.assert_allclose(users[q], expected, atol=2e-5)


def test_client_search_over_a_real_index_ranks_as_the_evaluation(log, tmp_path) -> None:
    items = unit_items(log.n_items, 8)
    store = ItemStore(shards=3, dim=8)
    store.put_many([str(i) for i in range(log.n_items)], items)
    install(build_version(store, tmp_path, BuildParams()), tmp_path)
    from dreamstream.index.publish import read_current

    version = load_version(tmp_path, read_current(tmp_path))
    scorer = DreamUMMScorer(items, Popularity.fit(log))
    qs = stream_queries(log, log.cut_at_fraction(0.5))
    histories = Histories(log, qs.seen)
    users, scores = scorer.users(histories), scorer.scores(histories)
    for q in range(len(qs)):
        if not np.any(users[q]):
            continue
        watched = {str(i) for i in log.item[qs.masked[q]]}
        ids, _ = version.search(users[q][None, :], 10 + len(watched))
        served = [i for i in ids[0] if i is not None and i not in watched][:10]
        s = scores[q].copy()
        s[log.item[qs.masked[q]]] = -np.inf
        offline = [str(i) for i in np.lexsort((np.arange(s.size), -s))[:10]]
        assert served == offline
