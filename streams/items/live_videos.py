"""Which stored videos are *live*: new videos the item tower embedded, refined by their watchers as they are watched.

The worker reports every watch of a live video to the item refiner
(``streams.item_refiner``, through ``item-watchers``) with the watcher's
vector; watches of trained videos are not reported. A video is live while
its newest ``item-vectors`` record says ``live`` (the item tower's and the
refiner's records do; a trained bundle's ``publish-items`` records do not),
so a video the next model trained on leaves the path by itself.

Held as a set of the ids' 64-bit Python hashes (~70 B a live video; live
videos are the ones published since the last training, a small share of the
catalogue) and asked once per batch. Two ids with the same 64-bit hash would
make a trained video's watches reported too: the refiner keeps a row for it
that is never published (it has no tower vector), so nothing is served wrong.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


class LiveVideos:
    """The hashes of the live videos' ids."""

    def __init__(self) -> None:
        self.keys: set[int] = set()

    def changes(self, videos: Sequence[str], live: Sequence[bool]) -> list[tuple[str, bool]]:
        """The (video, flag) pairs among ``videos[i]`` / ``live[i]`` that change the set: only they need writing.

        Why: the item table marks every vector it stores, and a catalogue
        load is millions of trained (not live) videos; while no video is live
        that is one ``any`` over the flags, not a hash and a RocksDB delete
        per video (a 10M cold start spent ~5 s writing those deletes).
        """
        if not self.keys and not any(live):
            return []
        keys = self.keys
        return [(video, flag) for video, flag in zip(videos, live) if flag != (hash(video) in keys)]

    def mark(self, changes: Iterable[tuple[str, bool]]) -> None:
        """Apply :meth:`changes`: each video is live or not from now on (its newest record said so)."""
        for video, flag in changes:
            if flag:
                self.keys.add(hash(video))
            else:
                self.keys.discard(hash(video))

    def mask(self, videos: Sequence[str]) -> np.ndarray:
        """bool [n]: which of ``videos`` are live (no per-id work while none is)."""
        if not self.keys:
            return np.zeros(len(videos), bool)
        keys = self.keys
        return np.fromiter((hash(v) in keys for v in videos), bool, len(videos))

    def __len__(self) -> int:
        return len(self.keys)
