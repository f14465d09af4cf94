"""OPAL as prequential scorers: the interests the worker would have published, read out four ways.

For a query the stream worker has stepped OPAL over every positive event of
the user's history (the whole history, not a training window; positive =
engagement weight > 0, the log's ``weight`` unless ``positive`` is given; on
MovieLens every rating is a watch), so a scorer does the same: each query's positive history is unrolled from the empty
state with :meth:`models.opal.Opal.states_after`. The queries of one user in
a batch are prefixes of one another (the protocol replays the user's events
in time order), so each user's longest history in the batch is unrolled once
and every query reads the state after its own prefix; any other history is
unrolled on its own. Decay as the worker applies it: the user vector's
events decay with ``half_life_s`` and OPAL's soft sums with
``opal_half_life_s`` (None: the same), by the gap between consecutive
stepped events (:func:`dreamstream.dreamumm_ref.decays`).

Modes (``OpalScorer.mode``):

``max``       item score = the best interest's inner product (the authors' retrieval, ``eval_max_score``).
``merge``     the client's quota merge over the interests alone (``user_share`` 0): per interest its top list,
              quotas by ``interest_weights``, :func:`dreamstream.merge.merge_by_score`.
``quota``     the client's previous ranking, kept for the comparison row: a user record holding the DreamUMM user
              vector (normalised sum of the history's item vectors) and the interests: :func:`user_queries`
              with ``user_share``, per query top lists with the history excluded, :func:`merge_by_score`.
``max+user``  the best inner product over {user vector, interests}.
``served``    what :meth:`dreamstream.client.Retriever.search` serves: :func:`dreamstream.blend.blend_scores`,
              <user vector, item> + ``blend_beta`` * the best interest's inner product, over the whole catalogue
              (the client ranks the union of the per-query top lists, measured to be the same ranking).

A merge is a ranked list, not scores: the merged top ``k`` get ``k, k-1, ...,
1`` in merged order and every other item :data:`UNRANKED` (finite, far
below), so the protocol's top-k returns the merged list as served. A query
with no history (or, for the interest-only modes, no positive event) gets
the training past's popularity, the served path's fallback; a history with
events but no positive one is searched with the user vector alone.

Cost (ML-100k, 16k streamed queries, one core): ~4 s for ``max`` and
``max+user``, ~10-20 s for the merges (a Python merge per query). Set
``OPENBLAS_NUM_THREADS=1`` on a shared machine: numpy's threaded BLAS turns
small products into thread contention.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from dreamstream.client import user_queries
from dreamstream.dreamumm_ref import decays as dreamumm_decays
from dreamstream.dreamumm_ref import normalize
from dreamstream.blend import INTEREST_WEIGHT, blend_scores
from dreamstream.evaluation.baselines import Popularity
from dreamstream.evaluation.prequential import Histories
from dreamstream.evaluation.scorers import history_weights
from dreamstream.merge import merge_by_score, query_weights

MODES = ("max", "merge", "quota", "served", "max+user")
UNRANKED = -1e9  # score of an item outside a merged list: finite, so nothing becomes NaN downstream


@dataclass(frozen=True)
class Readout:
    """Per query of a batch: OPAL's interests [B,K,D] and weights [B,K], the DreamUMM vector [B,D], flags [B]."""

    interests: np.ndarray
    weights: np.ndarray
    users: np.ndarray
    has_positive: np.ndarray  # OPAL stepped at least once (else its readout is the untouched prior)
    has_history: np.ndarray


def prefix_groups(histories: Histories, positive: np.ndarray | None, times: list | None = None
                  ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(sequences to unroll: item indexes of positive events, per query its sequence, per query its prefix length).

    When ``times`` is a list, the event times (seconds) of each sequence are appended to it.

    A query whose positive history is a prefix of a longer one in the batch
    (same user, earlier moment) reads that sequence's state; the rest are
    unrolled on their own.
    """
    log = histories.log
    kept = [rows if positive is None else rows[positive[rows]] for rows in histories.rows]
    reads = np.zeros(len(kept), np.int64)
    at = np.array([r.size for r in kept], np.int64)
    sequences: list[np.ndarray] = []
    by_user: dict[int, list[int]] = {}
    for q, rows in enumerate(kept):
        if rows.size:
            by_user.setdefault(int(log.user[rows[0]]), []).append(q)
    for queries in by_user.values():
        queries = sorted(queries, key=lambda q: -kept[q].size)
        heads: list[tuple[np.ndarray, int]] = []  # (rows of an unrolled sequence, its index)
        for q in queries:
            rows = kept[q]
            for head, index in heads:
                if np.array_equal(head[:rows.size], rows):
                    reads[q] = index
                    break
            else:
                heads.append((rows, len(sequences)))
                reads[q] = len(sequences)
                sequences.append(log.item[rows])
                if times is not None:
                    times.append(log.ts[rows])
    return sequences, reads, at


@dataclass
class OpalScorer:
    """A prequential scorer of a trained OPAL over frozen item vectors; see the module docstring for ``mode``."""

    model: "object"               # models.opal.Opal (trained, eval mode)
    items: np.ndarray             # float32 [n_items, D], unit rows: the index OPAL and the user vector search
    popularity: Popularity
    mode: str = "max"
    user_share: float = 0.3       # the user vector's part of the slots in ``served``
    k: int = 50                   # merged list length (the protocol's largest cut-off)
    positive: np.ndarray | None = None  # bool per log event: the events OPAL steps (None: weight > 0)
    weights: np.ndarray | None = None   # float per log event: DreamUMM engagement weights (None: the log's)
    half_life_s: float = float("inf")   # the worker's decay of the user vector
    opal_half_life_s: float | None = None  # decay of OPAL's soft sums (None: ``half_life_s``)
    blend_beta: float = INTEREST_WEIGHT  # the interests' weight in ``served``

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown OPAL scorer mode {self.mode!r}; one of {MODES}")
        self.items = np.ascontiguousarray(self.items, dtype=np.float32)
        self._catalogue = torch.from_numpy(self.items)

    # --- the published record -------------------------------------------------
    def readout(self, histories: Histories) -> Readout:
        """What the worker would have published for each query: interests, weights and the user vector."""
        from models.opal import interests_after

        b, k, d = len(histories), self.model.config.interests, self.items.shape[1]
        interests = np.zeros((b, k, d), np.float32)
        weights = np.zeros((b, k), np.float32)
        weights_of_log = self.weights if self.weights is not None else getattr(histories.log, "weight", None)
        positive = self.positive
        if positive is None and weights_of_log is not None:
            positive = np.asarray(weights_of_log) > 0
        times: list[np.ndarray] = []
        sequences, reads, at = prefix_groups(histories, positive, times)
        has_positive = at > 0
        if sequences:
            q = np.flatnonzero(has_positive)
            self.model.eval()
            opal_hl = self.half_life_s if self.opal_half_life_s is None else self.opal_half_life_s
            decays = None if math.isinf(opal_hl) else [dreamumm_decays(t * 1000.0, opal_hl) for t in times]
            got_i, got_w = interests_after(self.model, self._catalogue, sequences, reads[q], at[q], decays)
            interests[q], weights[q] = got_i.numpy(), got_w.numpy()
        if self.weights is None:
            users = normalize(history_weights(histories, self.half_life_s) @ self.items)
        else:
            users = normalize(histories.matrix(weights_of_log) @ self.items)
        has_history = np.array([r.size > 0 for r in histories.rows], bool)
        return Readout(interests, weights, users, has_positive, has_history)

    # --- scores -------------------------------------------------------------
    def scores(self, histories: Histories) -> np.ndarray:
        r = self.readout(histories)
        if self.mode == "max":
            out = self._inner(r.interests).max(axis=1)
            fallback = ~r.has_positive
        elif self.mode == "served":
            out = r.users @ self.items.T
            out[r.has_positive] = blend_scores(out[r.has_positive], self._inner(r.interests[r.has_positive]),
                                               self.blend_beta)
            fallback = ~r.has_history
        elif self.mode == "max+user":
            queries = np.concatenate([r.users[:, None, :], r.interests], axis=1)
            out = self._inner(queries)
            out[:, 1:][~r.has_positive] = -np.inf  # no OPAL state yet: the user vector alone
            out = out.max(axis=1)
            fallback = ~r.has_history
        else:
            out = self._merged(histories, r)
            fallback = ~r.has_positive if self.mode == "merge" else ~r.has_history  # quota
        out[fallback] = self.popularity.counts
        return out.astype(np.float32, copy=False)

    def _inner(self, queries: np.ndarray) -> np.ndarray:
        """[B, Q, D] query vectors -> [B, Q, N] inner products with every item, as one matrix product."""
        b, q, d = queries.shape
        return (queries.reshape(b * q, d) @ self.items.T).reshape(b, q, -1)

    def _merged(self, histories: Histories, r: Readout) -> np.ndarray:
        out = np.full((len(histories), self.items.shape[0]), UNRANKED, np.float32)
        rows = [q for q in range(len(histories))
                if r.has_history[q] and (self.mode != "merge" or r.has_positive[q])]
        plans = []  # per merged query: (its query matrix [Q, D], its quota weights)
        for q in rows:
            if self.mode == "merge":
                plans.append((r.interests[q], query_weights(r.weights[q], 0.0)[1:]))
            else:
                seen = bool(r.has_positive[q])
                record = {"vector": r.users[q], "interests": r.interests[q] if seen else None,
                          "interest_weights": [float(w) for w in r.weights[q]] if seen else None}
                plans.append(user_queries(record, self.items.shape[1], self.user_share))
        if not rows:
            return out
        # every query vector of every row in one product (many tiny BLAS calls are slow and thread-hungry)
        stacked = np.concatenate([m for m, _ in plans]).astype(np.float32, copy=False)
        owner = np.repeat(np.arange(len(rows)), [len(m) for m, _ in plans])
        excludes = [self._exclude(histories, q) for q in rows]
        ids, scores = top_lists(stacked @ self.items.T, [excludes[o] for o in owner], self.k)
        start = 0
        for i, (q, (m, weights)) in enumerate(zip(rows, plans)):
            end = start + len(m)
            merged = merge_by_score(ids[start:end], scores[start:end], weights, self.k, exclude=excludes[i].tolist())
            out[q, [item for item, _ in merged]] = np.arange(len(merged), 0, -1, dtype=np.float32)
            start = end
        return out

    @staticmethod
    def _exclude(histories: Histories, q: int) -> np.ndarray:
        if histories.exclude is not None:
            return np.asarray(histories.exclude[q], np.int64)
        return np.unique(histories.items(q))


def top_lists(scores: np.ndarray, exclude: list[np.ndarray], k: int) -> tuple[list[list[int]], list[np.ndarray]]:
    """Per row of ``scores`` [R, N]: its ``k`` best items outside ``exclude[row]`` and their scores, best first.

    The same list as the client's search of ``k + len(exclude)`` candidates
    followed by the merge's exclusion (the merge never reads further down a
    list than ``k`` unexcluded items); ties go to the lower item index. A row
    with fewer than ``k`` items left returns what is left.
    """
    s = np.array(scores, dtype=np.float32, copy=True)
    lengths = np.fromiter((len(e) for e in exclude), np.int64, len(exclude))
    if lengths.sum():
        s[np.repeat(np.arange(len(exclude)), lengths), np.concatenate(exclude).astype(np.int64)] = -np.inf
    k = min(k, s.shape[1])
    if k <= 0 or not len(s):
        return [[] for _ in s], [np.zeros(0, np.float32) for _ in s]
    part = np.argpartition(-s, k - 1, axis=1)[:, :k] if k < s.shape[1] else np.broadcast_to(np.arange(k), s.shape).copy()
    picked = np.take_along_axis(s, part, axis=1)
    ids = np.take_along_axis(part, np.lexsort((part, -picked), axis=1), axis=1)
    best = np.take_along_axis(s, ids, axis=1)
    keep = best > -np.inf
    return [row[m].tolist() for row, m in zip(ids, keep)], [row[m] for row, m in zip(best, keep)]
