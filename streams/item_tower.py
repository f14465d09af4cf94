"""The item tower agent: new videos' features on ``item-features`` -> item vectors on ``item-vectors``.

Every worker's item table follows ``item-vectors`` (``streams.kafka.item_table``),
so a video embedded here is known to every worker once its vector is on the
topic. Features that cannot be parsed become dead letters with the reason.

With live refinement on (``DREAMSTREAM_LIVE_GAMMA`` > 0) a new video starts
*live*: its first vector is the refinement with no watcher yet,
``normalize(tower - beta0 * m_user)``, flagged ``live`` so the workers report
its watches, and its tower vector goes to ``item-watchers``, where the item
refiner (``streams.item_refiner``) adds the watchers to it.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

import numpy as np

from dreamstream import codec
from dreamstream.dreamumm_ref import refined_vector
from dreamstream.settings import Settings
from dreamstream.vectors import checked_vector
from streams.domain.item_features import embed, parse_features, tower_dims
from streams.kafka.batch_send import send_records
from streams.kafka.output import DeadLetter, Output
from streams.kafka.transient import until_taken
from streams.ops.metrics import WorkerMetrics
from streams.ops.reload import BundleHolder


class ItemTower:
    """Embeds a batch of ``item-features`` events with the bundle being served and publishes the vectors."""

    def __init__(self, holder: BundleHolder, producer: Callable[[], Any], items_topic: str, output: Output,
                 metrics: WorkerMetrics, settings: Settings) -> None:
        self.holder, self.producer, self.items_topic = holder, producer, items_topic
        self.output, self.metrics, self.settings = output, metrics, settings

    async def embed_batch(self, batch: list[Any]) -> None:
        """Embed, check and publish one batch; returns only once every vector and letter is acknowledged.

        Faust's ``take_events`` acknowledges the batch when this returns *or
        raises*, so a failed send is retried here until the broker takes it
        (vectors are idempotent on a compacted topic; a letter may repeat)
        instead of raising into an acknowledgement of lost features.
        """
        bundle = self.holder.bundle
        text_dim, visual_dim = tower_dims(bundle)
        good, letters = [], []
        for event in batch:
            m = event.message
            try:
                good.append((parse_features(m.value, text_dim, visual_dim), m))
            except ValueError as err:
                letters.append(_letter(m, f"item-features: {err}", "item-features"))
        rows, towers = self._embedded(bundle, good, letters)
        await until_taken(lambda: self._send(rows, towers, letters),
                          f"item tower: sending {len(rows)} vectors and {len(letters)} letters")
        self.metrics.items.inc(len(rows))

    def _embedded(self, bundle: Any, good: list, letters: list[DeadLetter]
                  ) -> tuple[list[tuple[bytes, bytes, None]], list[tuple[bytes, bytes]]]:
        """item-vectors rows and item-watchers tower records (live refinement on) of the parsed features.

        A vector the tower got wrong (or a tower error) is a letter.
        """
        if not good:
            return [], []
        try:
            vectors = embed(bundle, [g[1] for g, _ in good], [g[2] for g, _ in good])
        except Exception as err:  # a broken bundle must not stop the agent: the features wait in the DLQ
            letters.extend(_letter(m, f"item tower failed: {err!r}"[:500], "item-tower-output") for _, m in good)
            return [], []
        live = self.settings.live_gamma > 0
        rows, towers = [], []
        for ((video, _, _, ts), m), vec in zip(good, vectors):
            try:
                vec = checked_vector(vec, int(bundle.manifest.dim))
            except ValueError as err:
                letters.append(_letter(m, f"item tower output for video {video[:64]!r}: {err}", "item-tower-output"))
                continue
            key = codec.key_bytes(video)
            if live:
                towers.append((key, codec.pack(codec.tower_record(video, vec, bundle.manifest.item_space, ts))))
                vec = refined_vector(vec, bundle.mean_user, np.zeros_like(vec), self.settings.live_beta0,
                                     self.settings.live_gamma)
            rows.append((key, codec.pack(codec.item_vector_record(video, vec, bundle.version, ts, live=live)), None))
        return rows, towers

    async def _send(self, rows: list[tuple[bytes, bytes, None]], towers: list[tuple[bytes, bytes]],
                    letters: list[DeadLetter]) -> None:
        futures = []
        if rows:
            futures.extend(sent.future for sent in await send_records(self.producer(), self.items_topic, rows))
        if towers:  # the refiner's start of each new video (keyed by video, like its watchers)
            futures.extend(await self.output.send({}, [], towers))
        if letters:
            futures.extend(await self.output.send({}, letters))
        if futures:
            await asyncio.gather(*futures)


def _letter(m: Any, reason: str, label: str) -> DeadLetter:
    return DeadLetter(reason, m.topic, m.partition, m.offset, m.key, m.value, label)
