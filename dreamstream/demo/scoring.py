"""Score what the demo streamed: retrieval quality of the published embeddings, and their agreement with offline.

Retrieval goes through :class:`dreamstream.client.Retriever` (what a
ranking service imports), so the numbers are those of the product, not of
an offline shortcut. The offline DreamUMM reference is computed from the same
item vectors and events with :mod:`dreamstream.dreamumm_ref`; the streamed
vectors must equal it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from dreamstream import codec
from dreamstream.client import Retriever
from dreamstream.data.metrics import KS, popularity_topk, topk_metrics
from dreamstream.data.recbole import Dataset
from dreamstream.data.split import Split
from dreamstream.dreamumm_ref import user_vector
from dreamstream.engagement import watch_times
from dreamstream.settings import Settings


@dataclass
class Scores:
    """Per-model metrics, per-user hits for the plot, and the offline agreement."""

    metrics: dict[str, dict[str, float]]
    history_len: np.ndarray        # [n_kept] events streamed per user
    hits: dict[str, np.ndarray]    # model -> bool [n_kept] hit@20
    offline_cosine: np.ndarray     # [n_kept] cosine(streamed vector, offline DreamUMM)


def streamed_topk(retriever: Retriever, records: dict[str, dict], ds: Dataset, split: Split,
                  k: int) -> np.ndarray:
    """int64 [n_kept, k] item indexes retrieved for each kept user from their latest record."""
    index_of = {item: i for i, item in enumerate(ds.item_ids)}
    exclude = split.exclude_items("test")
    out = np.full((len(split.users), k), -1, dtype=np.int64)
    for row, (u, seen) in enumerate(tqdm(list(zip(split.users, exclude)), desc="retrieve", unit="user")):
        record = records.get(ds.user_ids[u])
        if record is None:
            continue
        found = retriever.search(record, k, exclude=[ds.item_ids[i] for i in seen])
        out[row, : len(found)] = [index_of[item] for item, _ in found]
    return out


def streamed_rows(split: Split) -> list[np.ndarray]:
    """Per kept user, the rows the demo streams, in event order: training history, then the validation row."""
    return [np.append(rows, valid) for rows, valid in zip(split.history("valid"), split.valid_rows)]


def offline_agreement(records: dict[str, dict], ds: Dataset, split: Split, items: np.ndarray,
                      item_ids: list[str], settings: Settings) -> np.ndarray:
    """Cosine between each user's streamed vector and the offline DreamUMM vector of the same events."""
    watch, duration = watch_times(ds)
    weights = settings.engagement.weight(watch, duration)
    bundle_index = {item: i for i, item in enumerate(item_ids)}
    to_bundle = np.array([bundle_index[item] for item in ds.item_ids])
    cos = np.zeros(len(split.users), dtype=np.float64)
    for row, (u, rows) in enumerate(zip(split.users, streamed_rows(split))):
        record = records.get(ds.user_ids[u])
        if record is None:
            continue
        _, ref = user_vector(items[to_bundle[ds.item[rows]]], weights[rows],
                             np.round(ds.timestamp[rows] * 1000.0), settings.half_life_s)
        cos[row] = float(codec.bin_to_vec(record["vector"]) @ ref)
    return cos


def score(retriever: Retriever, records: dict[str, dict], ds: Dataset, split: Split, items: np.ndarray,
          item_ids: list[str], settings: Settings) -> Scores:
    """Recall/NDCG/HitRate of streamed retrieval and of popularity on each user's test item."""
    k = max(KS)
    targets = split.targets("test")
    exclude = split.exclude_items("test")
    _, train_items = split.train_positive_pairs()
    tops = {
        "streamed (client)": streamed_topk(retriever, records, ds, split, k),
        "popularity": popularity_topk(train_items, ds.n_items, exclude, k),
    }
    hits = {name: (top[:, :20] == targets[:, None]).any(axis=1) for name, top in tops.items()}
    return Scores(
        metrics={name: topk_metrics(top, targets) for name, top in tops.items()},
        history_len=np.array([len(r) for r in streamed_rows(split)]),
        hits=hits,
        offline_cosine=offline_agreement(records, ds, split, items, item_ids, settings),
    )
