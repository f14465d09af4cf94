"""The worker's output: ``user-embeddings`` records and dead letters, handed to the producer as whole record batches.

Sent as soon as a batch is applied, before its rows are durable: waiting for
the rows first cost the broker's acknowledgement of them in every event's
latency. Sending now is as exact: if the rows never become durable, the
offsets are not committed either, the events are applied again and the same
records (same ``seq``, same bytes with the same bundle) are sent again,
which consumers drop by ``seq`` (``streams.checkpoint``).

A dead letter is bounded (``codec.dead_letter``), and one the broker still
refuses for good (:data:`UNWRITABLE`: too large for a DLQ configured
smaller, say) is counted and logged instead of failing the flush: a failed
flush redoes the batch, and the same letter would fail again for ever.
"""
from __future__ import annotations

import logging
import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Sequence

from aiokafka import errors as kafka_errors

from dreamstream import codec
from streams.kafka.batch_send import send_records
from streams.ops.metrics import WorkerMetrics

log = logging.getLogger("streams.worker")

# The broker's answers that mean "this record will never be taken", whatever the retries: a dead letter refused with
# one of them is counted (dreamstream_dead_letters_unwritable_total{error}) and logged, not retried.
UNWRITABLE = (kafka_errors.MessageSizeTooLargeError, kafka_errors.RecordTooLargeError,
              kafka_errors.RecordListTooLargeError, kafka_errors.CorruptRecordException)


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

    @property
    def record_key(self) -> bytes | None:
        """The letter's Kafka key: its input's, cut like the copy inside it (``codec.letter_key``)."""
        return codec.letter_key(self.key)

    def packed(self) -> bytes:
        return codec.pack(codec.dead_letter(self.reason, self.topic, self.partition, self.offset, self.key, self.value))


class Output:
    """Records to ``out_topic`` keyed by user, dead letters to ``dlq_topic`` keyed as their input was, and the
    watches of live videos to ``watchers_topic`` keyed by video (``streams.item_refiner``)."""

    def __init__(self, producer: Callable[[], Any], out_topic: str, dlq_topic: str, metrics: WorkerMetrics,
                 watchers_topic: str = "") -> None:
        self.producer = producer  # the started producer, looked up per send (Faust starts it lazily)
        self.out_topic, self.dlq_topic, self.metrics = out_topic, dlq_topic, metrics
        self.watchers_topic = watchers_topic

    async def send(self, records: Mapping[str, bytes], letters: list[DeadLetter],
                   watchers: Sequence[tuple[bytes, bytes]] = ()) -> list[Awaitable[Any]]:
        """Hand records, letters and watcher records (key, value) to the producer now; their delivery futures.

        Watcher records are never held back in a catch-up, as records are: the
        refiner applies each watch-event position once, so a replayed one is
        dropped there, and each counts (a newest-per-key record would not do).
        """
        producer = self.producer()
        out = [(user.encode("utf-8"), record, None) for user, record in records.items()]
        deliveries = [sent.future for sent in await send_records(producer, self.out_topic, out)] if out else []
        if watchers:
            rows = [(key, value, None) for key, value in watchers]
            deliveries.extend(sent.future for sent in await send_records(producer, self.watchers_topic, rows))
        if letters:
            deliveries.extend(await self._send_letters(producer, letters))
            counts = Counter(letter.label for letter in letters)
            for label, n in counts.items():
                self.metrics.dead_letters.labels(reason=label).inc(n)
            first = letters[0]  # one line per batch, not per letter: a hostile message can hold a thousand of them
            log.warning("dead letters=%d by_reason=%s first: topic=%s partition=%s offset=%s reason=%r", len(letters),
                        dict(counts), first.topic, first.partition, first.offset, first.reason[:300])
        return deliveries

    async def _send_letters(self, producer: Any, letters: list[DeadLetter]) -> list[Awaitable[Any]]:
        """Hand the letters to the producer; their deliveries, each of which counts an :data:`UNWRITABLE` refusal."""
        rows = [(letter.record_key, letter.packed(), None) for letter in letters]
        try:
            sent = await send_records(producer, self.dlq_topic, rows)
        except UNWRITABLE as err:  # refused before leaving (the producer's own size check)
            self._unwritable(err, len(letters), letters[0])
            return []
        return [asyncio.ensure_future(self._written(s.future, s.count, letters[0])) for s in sent]

    async def _written(self, future: Awaitable[Any], count: int, first: DeadLetter) -> None:
        """A batch of letters acknowledged, or refused for good (counted, logged); transient errors still raise."""
        try:
            await future
        except UNWRITABLE as err:
            self._unwritable(err, count, first)

    def _unwritable(self, err: BaseException, count: int, first: DeadLetter) -> None:
        self.metrics.unwritable_letters.labels(error=type(err).__name__).inc(count)
        log.error("dead letters unwritable=%d error=%r: counted, not retried (a retry would stop this partition's "
                  "commits); first: topic=%s partition=%s offset=%s key_bytes=%s value_bytes=%s reason=%r", count, err,
                  first.topic, first.partition, first.offset, None if first.key is None else len(first.key),
                  None if first.value is None else len(first.value), first.reason[:300])
