"""The cold-item protocol: new videos, embedded by the item tower alone, and who finds them.

The hardest case of a micro-video platform is the video uploaded after the
model was trained. DREAM's item tower (:class:`models.dream.ItemTower`) maps
a video's content features into the item space; this protocol measures that:

* a seeded random ``COLD_SHARE`` of the catalogue loses every interaction
  before the prequential cutoff (:func:`without_cold_past`): no model
  trains on them;
* DREAM is trained on what is left, the item tower distilled on the warm
  items only, and the cold items get their vectors from the tower over
  their content features (:func:`tower_vectors`);
* the scored events are the streamed events (after the cutoff, strict
  grouping) whose target is a cold item, ranked against the full catalogue;
* the same stream's *other* events (targets the model trained on) in a
  block of their own (:data:`WARM_BLOCK`): what the new vectors cost the
  rest of the ranking, against the cold items not retrievable at all
  (:class:`Withheld`, over the same item space: a user who watched a new
  film still carries its tower vector, as the worker's item table does
  when the index leaves new videos out; :func:`other_event_scorers`). A
  tower whose vectors sit where every user points wins cold-target events
  by crowding the top-k, and only this block shows it;
* baselines from content alone (:class:`TfidfScorer`: TF-IDF of the
  ``.item`` text, similarity to the decayed history; :class:`GenrePopularity`:
  the history's genres times the item's live popularity), and the upper
  bound: the same items with the vectors DREAM learns when it does see
  their past interactions.

Known limit: DREAM's modal item graph is built from every item's features,
so a cold item's *features* (never its interactions) are part of the graph
while the warm items train. The cold vectors themselves come only from the
tower.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from dreamstream.evaluation.baselines import decayed_presence
from dreamstream.evaluation.events import EventLog
from dreamstream.evaluation.prequential import Histories, QuerySet

COLD_SHARE = 0.1
COLD_SEED = 0  # one cold set for every seed: seeds then differ by training only, and rows pair event by event
TOWER_ROW = "dream, cold items from the item tower"
UPPER_ROW = "dream, cold items' trained vectors (upper bound)"
TFIDF_ROW = "content: tf-idf similarity to decayed history"
GENRE_ROW = "content: popularity within genre (live)"
WARM_BLOCK = "cold-item, other events"  # the same stream's events whose target is NOT a cold item
WITHHELD_ROW = "dream, cold items not retrievable"
GENRE_FIELDS = ("class", "genre", "genres", "category", "categories")


def cold_items(n_items: int, share: float = COLD_SHARE, seed: int = COLD_SEED) -> np.ndarray:
    """The seeded cold set: ``share`` of the items (at least one), sorted."""
    n = max(1, int(round(n_items * share)))
    return np.sort(np.random.default_rng(seed).choice(n_items, n, replace=False))


def subset(log: EventLog, keep: np.ndarray) -> EventLog:
    """The events of ``log`` where ``keep`` (time order kept)."""
    return EventLog(log.user[keep], log.item[keep], log.weight[keep], log.ts[keep], log.n_users, log.n_items,
                    None if log.rows is None else log.rows[keep])


def without_cold_past(log: EventLog, cold: np.ndarray, cutoff: int) -> tuple[EventLog, int]:
    """``log`` without the cold items' events before event ``cutoff``, and the same cutoff time's index in it."""
    is_cold = np.zeros(log.n_items, bool)
    is_cold[cold] = True
    keep = ~(is_cold[log.item] & (np.arange(len(log)) < cutoff))
    kept = subset(log, keep)
    return kept, int(keep[:cutoff].sum())


@dataclass
class Withheld:
    """A scorer with ``items`` never ranked: a service that does not index new videos yet.

    Everything else is the wrapped scorer's, user vectors included: wrap the
    scorer of the service that does index them (same item space, the new
    videos' tower vectors in it), so the two differ only in retrievability.
    """

    scorer: object
    items: np.ndarray

    def scores(self, histories: Histories) -> np.ndarray:
        out = np.array(self.scorer.scores(histories), dtype=np.float32, copy=True)
        out[:, self.items] = -np.inf
        return out


def other_event_scorers(served: object, cold: np.ndarray) -> dict[str, object]:
    """The other-events block's rows: ``served`` (the tower's item space), and the same with ``cold`` not retrievable.

    One scorer under both, so the rows differ only in whether the new videos
    can be ranked. A service that does not index new videos still has their
    tower vectors in the worker's item table (the tower embeds every video
    the content pipeline publishes), so its users' vectors are the same; a
    withheld row over DREAM's never-trained init vectors of the cold items
    would put those into the user vectors of everyone who watched one.
    """
    return {TOWER_ROW: served, WITHHELD_ROW: Withheld(served, cold)}


def targeting(qs: QuerySet, items: np.ndarray) -> QuerySet:
    """The queries of ``qs`` whose target is one of ``items``."""
    wanted = np.zeros(qs.log.n_items, bool)
    wanted[items] = True
    keep = np.flatnonzero(wanted[qs.log.item[qs.queries]])
    return QuerySet(qs.log, qs.queries[keep], [qs.seen[i] for i in keep], [qs.masked[i] for i in keep])


def tower_vectors(features: dict, trained: np.ndarray, cold: np.ndarray, seed: int, served: tuple,
                  steps: int = 400) -> np.ndarray:
    """The item space a service has for new videos: trained vectors for warm items, the item tower's for ``cold``.

    The tower is distilled on the warm items only (their content features ->
    their trained vectors, and the served users ranking them, as
    ``dreamstream train`` distils it), then applied to the cold items' features.
    ``served``: ``models.readout_trainer.served_examples(log, trained, half_life_s)``
    over the training log (the caller also reads the served users' mean direction from it).
    """
    import torch

    from models.dream import distil_item_tower, tower_inputs

    n_items = trained.shape[0]
    warm = np.setdiff1d(np.arange(n_items), cold)
    tower, _ = distil_item_tower(features, torch.from_numpy(trained), trained.shape[1], steps=steps, holdout=0.0,
                                 seed=seed, progress=False, served=served, learn=warm)
    _, text, visual = tower_inputs(features, n_items)
    with torch.no_grad():
        vectors = tower(text[cold], visual[cold]).numpy()
    out = trained.copy()
    out[cold] = vectors
    return out


def tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def tfidf(texts: list[str]) -> np.ndarray:
    """float32 [n_items, vocabulary]: smoothed TF-IDF of each item's text, unit rows (zero rows for empty text)."""
    docs = [tokens(t) for t in texts]
    vocab = {w: i for i, w in enumerate(sorted({w for d in docs for w in d}))}
    x = np.zeros((len(docs), max(len(vocab), 1)), np.float32)
    for row, d in enumerate(docs):
        for w in d:
            x[row, vocab[w]] += 1.0
    df = (x > 0).sum(axis=0)
    x *= np.log((1 + len(docs)) / (1 + df)) + 1.0
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def genres(item_fields: dict[str, list[str]]) -> np.ndarray | None:
    """float32 [n_items, n_genres] one-hot of the first genre-like ``.item`` field, or None without one."""
    field = next((f for f in GENRE_FIELDS if f in item_fields), None)
    if field is None:
        return None
    values = [v.split() for v in item_fields[field]]
    names = {g: i for i, g in enumerate(sorted({g for v in values for g in v}))}
    out = np.zeros((len(values), max(len(names), 1)), np.float32)
    for row, v in enumerate(values):
        out[row, [names[g] for g in v]] = 1.0
    return out


@dataclass
class TfidfScorer:
    """Content only: cosine of each item's TF-IDF to the user's decayed TF-IDF profile."""

    content: np.ndarray          # [n_items, V] unit rows
    fallback: np.ndarray         # [n_items] scores of an empty history (training popularity)
    half_life_s: float = math.inf

    def scores(self, histories: Histories) -> np.ndarray:
        h = decayed_presence(histories, self.half_life_s)
        out = (h @ self.content) @ self.content.T
        out[h.sum(axis=1) == 0] = self.fallback
        return out


@dataclass
class GenrePopularity:
    """Content and the crowd: the user's decayed genre shares times each item's live popularity.

    An item's popularity is its number of events strictly before the query
    (the streamed past included), so a new video gains it as it is watched.
    """

    genres: np.ndarray           # [n_items, G] one-hot
    log: EventLog                # the events counted (the protocol's log)
    half_life_s: float = math.inf

    def scores(self, histories: Histories) -> np.ndarray:
        h = decayed_presence(histories, self.half_life_s)
        share = h @ self.genres
        share /= np.maximum(share.sum(axis=1, keepdims=True), 1e-12)
        out = np.empty((len(histories), self.log.n_items), np.float32)
        if histories.queries is None:
            raise ValueError("GenrePopularity needs the query events (Histories.queries) to count the live past")
        for q, event in enumerate(histories.queries):
            before = np.searchsorted(self.log.ts, self.log.ts[event], side="left")  # strictly earlier events
            live = np.bincount(self.log.item[:before], minlength=self.log.n_items)
            match = self.genres @ share[q] if h[q].any() else np.ones(self.log.n_items, np.float32)
            out[q] = match * np.log1p(live) + 1e-6 * live
        return out
