"""The item tower agent: new videos' features on ``item-features`` -> item vectors on ``item-vectors``.

Every worker's item table follows ``item-vectors`` (``streams.kafka.item_table``),
so a video embedded here is known to every worker once its vector is on the
topic. Features that cannot be parsed become dead letters with the reason.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from dreamstream import codec
from streams.domain.item_features import embed, parse_features, tower_dims
from streams.kafka.batch_send import send_records
from streams.kafka.output import DeadLetter, Output
from streams.ops.metrics import WorkerMetrics
from streams.ops.reload import BundleHolder


class ItemTower:
    """Embeds a batch of ``item-features`` events with the bundle being served and publishes the vectors."""

    def __init__(self, holder: BundleHolder, producer: Callable[[], Any], items_topic: str, output: Output,
                 metrics: WorkerMetrics) -> None:
        self.holder, self.producer, self.items_topic = holder, producer, items_topic
        self.output, self.metrics = output, metrics

    async def embed_batch(self, batch: list[Any]) -> None:
        bundle = self.holder.bundle
        text_dim, visual_dim = tower_dims(bundle)
        good, letters = [], []
        for event in batch:
            m = event.message
            try:
                good.append(parse_features(m.value, text_dim, visual_dim))
            except ValueError as err:
                letters.append(DeadLetter(f"item-features: {err}", m.topic, m.partition, m.offset, m.key, m.value))
        futures = []
        if good:
            vectors = embed(bundle, [g[1] for g in good], [g[2] for g in good])
            rows = [(codec.key_bytes(video), codec.pack(codec.item_vector_record(video, vec, bundle.version, ts)), None)
                    for (video, _, _, ts), vec in zip(good, vectors)]
            futures.extend(sent.future for sent in await send_records(self.producer(), self.items_topic, rows))
            self.metrics.items.inc(len(good))
        if letters:
            futures.extend(await self.output.send({}, letters))
        if futures:
            await asyncio.gather(*futures)
