"""The worker's output: ``user-embeddings`` records and dead letters, handed to the producer as whole record batches.

Sent as soon as a batch is applied, before its rows are durable: waiting for
the rows first cost the broker's acknowledgement of them in every event's
latency. Sending now is as exact: if the rows never become durable, the
offsets are not committed either, the events are applied again and the same
records (same ``seq``, same bytes with the same bundle) are sent again,
which consumers drop by ``seq`` (``streams.checkpoint``).
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

from dreamstream import codec
from streams.kafka.batch_send import send_records
from streams.ops.metrics import WorkerMetrics

log = logging.getLogger("streams.worker")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One input the worker cannot apply, with where it came from and its own bytes (an event, or a whole message)."""

    reason: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    label: str  # one of streams.domain.validate.LABELS: the metric's label (the detail stays in ``reason``)

    def packed(self) -> bytes:
        return codec.pack(codec.dead_letter(self.reason, self.topic, self.partition, self.offset, self.key, self.value))


class Output:
    """Records to ``out_topic`` keyed by user, dead letters to ``dlq_topic`` keyed as their input was."""

    def __init__(self, producer: Callable[[], Any], out_topic: str, dlq_topic: str, metrics: WorkerMetrics) -> None:
        self.producer = producer  # the started producer, looked up per send (Faust starts it lazily)
        self.out_topic, self.dlq_topic, self.metrics = out_topic, dlq_topic, metrics

    async def send(self, records: Mapping[str, bytes], letters: list[DeadLetter]) -> list[Awaitable[Any]]:
        """Hand records and letters to the producer now; their delivery futures."""
        producer = self.producer()
        out = [(user.encode("utf-8"), record, None) for user, record in records.items()]
        deliveries = [sent.future for sent in await send_records(producer, self.out_topic, out)] if out else []
        if letters:
            rows = [(letter.key, letter.packed(), None) for letter in letters]
            deliveries.extend(sent.future for sent in await send_records(producer, self.dlq_topic, rows))
            counts = Counter(letter.label for letter in letters)
            for label, n in counts.items():
                self.metrics.dead_letters.labels(reason=label).inc(n)
            first = letters[0]  # one line per batch, not per letter: a hostile message can hold a thousand of them
            log.warning("dead letters=%d by_reason=%s first: topic=%s partition=%s offset=%s reason=%r", len(letters),
                        dict(counts), first.topic, first.partition, first.offset, first.reason[:300])
        return deliveries
