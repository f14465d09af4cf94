"""Putting a dataset's item features on ``item-features``, as a content pipeline would for new videos.

The worker's item tower embeds every ``item-features`` record with the
bundle it serves and publishes the vector on ``item-vectors``; the indexer
then makes the video searchable. This module is the producer side: one
record per item, ``{"video", "text", "visual", "ts"}`` with the features as
float32 ``bin`` of the widths the bundle's tower expects
(:func:`streams.domain.item_features.parse_features` reads them back). A
modality the dataset lacks is sent as zeros of the tower's width (the tower
was trained without it too, see :class:`models.dream.ItemTower`); a width
that differs from the tower's is refused before anything is sent.
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from dreamstream import codec
from dreamstream.data.recbole import Dataset
from dreamstream.errors import UserError
from dreamstream.index.items_publisher import _send_records
from dreamstream.settings import Settings
from dreamstream.topics import ITEM_FEATURES


def tower_widths(bundle: Path) -> tuple[int, int]:
    """(text_dim, visual_dim) of a bundle's item tower, from its manifest."""
    manifest = json.loads((Path(bundle) / "manifest.json").read_text("utf-8"))
    return int(manifest["text_dim"]), int(manifest["visual_dim"])


def feature_matrices(ds: Dataset, text_dim: int, visual_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The dataset's (text [I, Dt], visual [I, Dv]) at the tower's widths; refuses a width the tower cannot read."""
    out = []
    for name, raw, width in (("text", ds.text_feat, text_dim), ("visual", ds.image_feat, visual_dim)):
        if raw is None:
            out.append(np.zeros((ds.n_items, width), np.float32))
            continue
        if raw.shape[1] != width:
            raise UserError(f"{ds.path}: {name} features are {raw.shape[1]} wide but the bundle's item tower reads "
                            f"{width}: publish features of the dataset the bundle was trained on")
        out.append(np.ascontiguousarray(raw, np.float32))
    return out[0], out[1]


def chosen_items(ds: Dataset, items: Sequence[str]) -> np.ndarray:
    """Indexes of the ``items`` ids (every item when empty); unknown ids are refused, naming a few."""
    if not items:
        return np.arange(ds.n_items)
    index = {item: i for i, item in enumerate(ds.item_ids)}
    unknown = [i for i in items if i not in index]
    if unknown:
        raise UserError(f"{len(unknown)} of the --items are not in {ds.path}: {', '.join(unknown[:5])}")
    return np.array([index[i] for i in dict.fromkeys(items)], np.int64)


def feature_records(ids: Sequence[str], text: np.ndarray, visual: np.ndarray, ts: int) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of each item's ``item-features`` record."""
    for item_id, t, v in zip(ids, text, visual):
        yield codec.key_bytes(item_id), codec.pack({"video": item_id, "text": codec.vec_to_bin(t),
                                                    "visual": codec.vec_to_bin(v), "ts": ts})


def publish_features(settings: Settings, ds: Dataset, bundle: Path, items: Sequence[str] = (),
                     progress: bool = True) -> int:
    """Put the features of ``items`` (all by default) on ``item-features``; returns how many were sent."""
    text_dim, visual_dim = tower_widths(bundle)
    text, visual = feature_matrices(ds, text_dim, visual_dim)
    rows = chosen_items(ds, items)
    ids = [str(ds.item_ids[i]) for i in rows]
    records = feature_records(ids, text[rows], visual[rows], int(time.time() * 1000))
    return asyncio.run(_send_records(settings, records, len(ids), progress, topic_name=ITEM_FEATURES))
