"""New films refined by their live watchers: the cold-item protocol's served row (``streams.item_refiner`` serves it).

The item tower places a new video from its content alone; on MovieLens that
only ties TF-IDF on the new films' events (docs/evaluation.md, cold-item
protocol). What content lacks is *who* a film is for, and a streaming
service learns that as the film is watched: item-side DreamUMM. A new
film's vector at time ``t`` is::

    v(t) = normalize(tower - BETA0 * m_user + GAMMA * sum_e u_e)

over its watchers ``e`` strictly before ``t`` (``u_e``: the watcher's unit
user vector just before their event), with ``m_user`` the mean direction of
the served user vectors over the training log (:func:`mean_user_direction`).
``-BETA0 * m_user`` pushes a film nobody has watched yet below where the
tower put it (a tower vector near where every user points crowds everyone's
top-k); each watcher then pulls it towards the users who watch it.

Strict, as the protocol: a query sees only watchers strictly earlier than
its own second (other users' events of the same second excluded, as
:class:`~dreamstream.evaluation.cold_items.GenrePopularity` counts them), a
watcher's vector is their strict state before their same-second group
(the cold-item block's own query histories), and every event in a user's
history uses the vector its film had at that event's time (the version
after the film's watchers strictly before it: what a worker following a
refreshed item table would hold). The cold films have no training-period
events (:func:`~dreamstream.evaluation.cold_items.without_cold_past`), so
their watchers are the streamed past only.

As measured when the row was chosen (a scratch experiment, now this
module): the watchers' own vectors keep the *tower* vectors of any new film
in their history (no recursion through other films' refinements), and the
sum is unweighted (a watcher who rated a film low pulls as much as one who
rated it high). The worker serves it (docs/architecture.md, "New videos"):
the sum there is of engagement-weighted unit vectors (every MovieLens
rating is replayed as a full play, weight 1, so the two agree on this
data), and a watcher's vector holds the refined versions of the new films
it watched (the row "user vectors keep the static tower vectors" in
docs/evaluation.md measured the difference: 0.006 on the cold events).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dreamstream.dreamumm_ref import LIVE_BETA0, LIVE_GAMMA, mean_user_direction, normalize, refined_vector
from dreamstream.evaluation.baselines import Popularity
from dreamstream.evaluation.prequential import Histories, QuerySet
from dreamstream.evaluation.scorers import DreamUMMScorer, history_weights, row_weights

# Chosen on the validation window only (ml-100k-dev, development cold-item protocol, DREAM seeds 0-2): the best of
# 134 live settings by all-events HitRate@20 on the window's first half, then reported on the whole window and the
# held-out second half. docs/evaluation.md, "Live refinement of the new films' vectors".
BETA0 = LIVE_BETA0  # how far below the tower a film with no watcher starts, along m_user (the served default)
GAMMA = LIVE_GAMMA  # how far each watcher's unit user vector pulls it (the served default)
LIVE_ROW = "dream, new films: tower refined by live watchers (served)"


def watcher_vectors(items: np.ndarray, qs: QuerySet, popularity: Popularity, half_life_s: float,
                    batch: int = 1024) -> np.ndarray:
    """float32 [len(qs), D]: each query's user vector over ``items`` from its strict history (zero when empty).

    Over the static item space (the tower's vectors for new films), as the
    row was measured: a watcher's vector does not depend on other new films' refinements.
    """
    served = DreamUMMScorer(items, popularity, half_life_s)
    parts = [served.users(Histories(qs.log, qs.seen[lo:lo + batch], None, qs.queries[lo:lo + batch]))
             for lo in range(0, len(qs), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, items.shape[1]), np.float32)


@dataclass(frozen=True)
class Versions:
    """Every vector the new films pass through as they are watched: a film's version k follows its first k watchers.

    What an item-keyed agent would publish on ``item-vectors``, one version
    per watch; a lookup by time returns the version after the watchers
    strictly before it (same-second watchers excluded).
    """

    films: np.ndarray          # [n_new] item ids of the new films
    times: list[np.ndarray]    # per film, its watchers' event times, sorted
    start: np.ndarray          # [n_new] row of each film's version 0 (no watcher) in ``vectors``
    vectors: np.ndarray        # float32 [n_new + n_watches, D] unit rows

    def rows_at(self, slots: np.ndarray, when: np.ndarray) -> np.ndarray:
        """Rows of ``vectors``: film ``films[slots[i]]``'s version at time ``when[i]`` (watchers strictly earlier)."""
        slots, when = np.asarray(slots), np.asarray(when)
        out = np.empty(slots.shape, np.int64)
        for slot in np.unique(slots):
            at = slots == slot
            out[at] = self.start[slot] + np.searchsorted(self.times[slot], when[at], side="left")
        return out

    def grid(self, when: np.ndarray) -> np.ndarray:
        """[len(when), n_new] rows of ``vectors``: every film's version at each time (watchers strictly earlier)."""
        return np.stack([start + np.searchsorted(times, when, side="left")
                         for start, times in zip(self.start, self.times)], axis=1)


def build_versions(tower: np.ndarray, films: np.ndarray, watched: np.ndarray, when: np.ndarray, watchers: np.ndarray,
                   m_user: np.ndarray, beta0: float = BETA0, gamma: float = GAMMA) -> Versions:
    """Each film's versions from its watch events: ``watched`` [E] item ids, ``when`` [E] times, ``watchers`` [E, D].

    ``tower`` [n_items, D]: the static item space (the tower's vectors for ``films``).
    """
    times, start, vectors, row = [], [], [], 0
    for film in films:
        mine = np.flatnonzero(watched == film)
        mine = mine[np.argsort(when[mine], kind="stable")]
        sums = np.vstack([np.zeros((1, tower.shape[1])), np.cumsum(watchers[mine].astype(np.float64), axis=0)])
        vectors.append(refined_vector(tower[film], m_user, sums, beta0, gamma))
        times.append(when[mine])
        start.append(row)
        row += sums.shape[0]
    dim = tower.shape[1]
    return Versions(np.asarray(films), times, np.asarray(start, np.int64),
                    np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32))


@dataclass
class LiveRefinedScorer:
    """DreamUMM over the tower's item space, the new films' vectors refined by their watchers up to each query.

    Everything else (warm vectors, decay, engagement weights, the popularity
    fallback of an empty history) is :class:`DreamUMMScorer`'s, so against
    the tower's row the only difference is the refinement.
    """

    items: np.ndarray            # float32 [n_items, D]: trained vectors, the item tower's for the new films
    versions: Versions
    popularity: Popularity
    half_life_s: float = float("inf")

    def __post_init__(self) -> None:
        self._slot = np.full(self.items.shape[0], -1, np.int64)
        self._slot[self.versions.films] = np.arange(self.versions.films.size)

    def users(self, histories: Histories) -> np.ndarray:
        """float32 [B, D]: the user vectors, each new-film event with its film's version at that event's time."""
        log = histories.log
        weights = history_weights(histories, self.half_life_s)
        weights[:, self.versions.films] = 0.0
        out = weights @ self.items
        for q, rows in enumerate(histories.rows):
            slots = self._slot[log.item[rows]]
            new = slots >= 0
            if new.any():
                g = row_weights(log, rows, self.half_life_s)[new]
                out[q] += g @ self.versions.vectors[self.versions.rows_at(slots[new], log.ts[rows[new]])]
        return normalize(out)

    def scores(self, histories: Histories) -> np.ndarray:
        if histories.queries is None:
            raise ValueError("LiveRefinedScorer needs the query events (Histories.queries): refinement is by time")
        users = self.users(histories)
        out = users @ self.items.T
        rows = self.versions.grid(histories.log.ts[histories.queries])
        out[:, self.versions.films] = np.take_along_axis(users @ self.versions.vectors.T, rows, axis=1)
        out[~np.any(users != 0, axis=1)] = self.popularity.counts
        return out


def live_scorer(items: np.ndarray, films: np.ndarray, cold_queries: QuerySet, served_users: np.ndarray,
                popularity: Popularity, half_life_s: float, beta0: float = BETA0,
                gamma: float = GAMMA) -> LiveRefinedScorer:
    """The experimental row's scorer: ``films``' watchers are the cold-item block's queries (their strict states).

    ``items``: the tower's item space; ``served_users``: the served user
    vectors of the training log (for ``m_user``). Every event of a new film
    in the log must be one of ``cold_queries`` (the protocol removes their
    past before the cutoff), else a watcher would be missed: checked.
    """
    log = cold_queries.log
    is_new = np.zeros(log.n_items, bool)
    is_new[films] = True
    targets = log.item[cold_queries.queries]
    if not is_new[targets].all() or int(is_new[log.item].sum()) != len(cold_queries):
        raise ValueError("the cold queries must be exactly the new films' events of the log")
    watchers = watcher_vectors(items, cold_queries, popularity, half_life_s)
    versions = build_versions(items, films, targets, log.ts[cold_queries.queries], watchers,
                              mean_user_direction(served_users), beta0, gamma)
    return LiveRefinedScorer(items, versions, popularity, half_life_s)
