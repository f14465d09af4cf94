"""Put recorded traffic back on Kafka: a dataset's interactions, or the dead letters.

Two jobs, one module, because both are "produce records the worker will
consume as if they were live":

* **Dataset replay** (:func:`replay_dataset`): the rows of a RecBole dataset
  become ``watch-events`` in event-time order (ties by row order in
  ``.inter``, the order :mod:`dreamstream.data.split` uses), keyed by user id
  so the default murmur2 partitioner puts a user's events on the partition the
  worker's user-state table expects, paced at a fixed rate, at a multiple of
  the recorded speed, or as fast as the producer goes.
* **Dead-letter re-drive** (:func:`redrive_dead_letters`): each record of
  ``watch-events-dlq`` carries the original topic, key and value bytes; they
  go back on that topic unchanged. A committed consumer group remembers what
  was re-driven, so running it twice does not re-drive a letter twice.

The pure parts (which rows, in what order, when each is due, what a dead
letter turns into) are small functions tested without a broker; the two
drivers only move bytes through a kafka-python producer.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np

from dreamstream import codec
from dreamstream.engagement import SYNTH_DURATION_MS, watch_times  # noqa: F401  (re-exported for callers)
from dreamstream.errors import broker_bootstrap
from dreamstream.kafka.security import kafka_python_options
from dreamstream.settings import Settings
from dreamstream.topics import DLQ, ITEM_FEATURES, WATCH_EVENTS

if TYPE_CHECKING:  # the data package is only needed by dataset replay
    from dreamstream.data.recbole import Dataset

log = logging.getLogger(__name__)

PARTS = ("all", "train", "heldout")
REDRIVE_GROUP = "dreamstream-redrive"


class ReplayError(ValueError):
    """The replay was asked for something it cannot do; the message says what to change."""


# --------------------------------------------------------------------------
# which rows, in what order


def select_rows(ds: "Dataset", part: str = "all", since: float | None = None, until: float | None = None,
                settings: Settings | None = None) -> np.ndarray:
    """Row indexes of ``ds`` to replay, in event-time order (ties by row order).

    ``part``: ``all`` rows; ``train`` = the rows a model trains on under the
    design's leave-last-out split; ``heldout`` = each kept user's rows after
    their training history (validation and test rows and anything after),
    i.e. what a trained model has not seen: the demo streams these.
    ``since`` / ``until``: event time in seconds, ``since <= ts < until``.
    """
    if part not in PARTS:
        raise ReplayError(f"--part must be one of {', '.join(PARTS)}, got {part!r}")
    mask = np.ones(ds.user.shape[0], dtype=bool)
    if part != "all":
        from dreamstream.data.split import leave_last_out

        split = leave_last_out(ds, engagement=(settings or Settings()).engagement)
        train = np.zeros_like(mask)
        train[split.train_rows] = True
        mask = train if part == "train" else np.isin(ds.user, split.users) & ~train
    if since is not None:
        mask &= ds.timestamp >= since
    if until is not None:
        mask &= ds.timestamp < until
    return time_order(ds.timestamp, np.flatnonzero(mask))


def time_order(timestamp: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``rows`` sorted by ``(timestamp[row], row)``: equal times in ``.inter`` file order."""
    rows = np.asarray(rows, dtype=np.int64)
    return rows[np.lexsort((rows, timestamp[rows]))]


def event_values(ds: "Dataset", rows: np.ndarray) -> Iterator[tuple[bytes, bytes, int]]:
    """``(key, value, ts_ms)`` of each row, in the given order, encoded as the worker reads them."""
    watch, duration = watch_times(ds)
    kind = ds.columns.get("kind")  # numeric column when present: 1 = impression, else watch
    for row in rows:
        user = ds.user_ids[ds.user[row]]
        ts_ms = int(round(float(ds.timestamp[row]) * 1000.0))
        value: dict[str, Any] = {"user": user, "video": ds.item_ids[ds.item[row]], "ts": ts_ms,
                                 "watch_ms": int(round(float(watch[row]))),
                                 "duration_ms": int(round(float(duration[row])))}
        if kind is not None and kind[row] == 1:
            value["kind"] = "impression"
        yield codec.key_bytes(user), codec.pack(value), ts_ms


# --------------------------------------------------------------------------
# when each event is due


@dataclass(frozen=True)
class Pace:
    """When the i-th event is due, in seconds after the replay starts.

    ``rate``: events per second, regardless of the recorded times.
    ``speedup``: recorded gaps divided by this (1 = real time, 3600 = an hour
    per second). Neither: as fast as possible (everything is due at once).
    """

    rate: float | None = None
    speedup: float | None = None

    def __post_init__(self) -> None:
        if self.rate is not None and self.speedup is not None:
            raise ReplayError("give --rate or --speedup, not both")
        for name in ("rate", "speedup"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ReplayError(f"--{name} must be > 0, got {value}")

    def due(self, index: int, ts_ms: int, first_ts_ms: int) -> float:
        if self.rate is not None:
            return index / self.rate
        if self.speedup is not None:
            return max(ts_ms - first_ts_ms, 0) / 1000.0 / self.speedup
        return 0.0


def paced(events: Iterable[tuple[bytes, bytes, int]], pace: Pace, clock=time.monotonic, sleep=time.sleep
          ) -> Iterator[tuple[bytes, bytes, int]]:
    """Yield events no earlier than they are due; sleeps only when more than 1 ms ahead.

    Late events are not dropped or bunched up by design: when the producer
    falls behind, the replay simply runs as fast as it can until it catches up.
    """
    start = clock()
    first: int | None = None
    for index, event in enumerate(events):
        first = event[2] if first is None else first
        ahead = start + pace.due(index, event[2], first) - clock()
        if ahead > 0.001:
            sleep(ahead)
        yield event


def parse_time(text: str | None) -> float | None:
    """``--since`` / ``--until``: epoch seconds, or an ISO date / datetime (UTC when no zone)."""
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ReplayError(f"cannot read {text!r} as a time: give epoch seconds or an ISO date "
                          "such as 2024-05-01 or 2024-05-01T12:00:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


# --------------------------------------------------------------------------
# dead letters


@dataclass(frozen=True)
class ProduceRequest:
    """One record to put back: the original topic, key and value bytes, byte for byte."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None  # set only for an unkeyed letter: back where it came from


def redrive_request(letter: bytes | None, reason_contains: str | None = None,
                    inputs: frozenset[str] | None = None) -> ProduceRequest | None:
    """The record a dead letter re-drives, or None when it does not match ``reason_contains``.

    Raises :class:`ReplayError` for a value that is not a dead letter, one
    whose value was cut (``truncated``: the whole original is on its topic
    at its offset), or one naming a topic outside ``inputs`` (a letter must
    never write into ``item-vectors`` or any topic but the inputs dead
    letters come from); the caller logs and moves on.
    """
    try:
        data = codec.unpack(letter) if letter is not None else None
    except ValueError as err:
        raise ReplayError(f"not msgpack: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("topic"), str) or "value" not in data:
        raise ReplayError("not a dead letter: need a map with at least 'topic' and 'value'")
    if reason_contains and reason_contains.lower() not in str(data.get("reason", "")).lower():
        return None
    if inputs is not None and data["topic"] not in inputs:
        raise ReplayError(f"letter names topic {data['topic']!r:.100}, not an input topic ({', '.join(sorted(inputs))}); "
                          "not re-sent")
    if data.get("key_truncated"):
        raise ReplayError(f"letter holds only the first bytes of a {data['key_truncated']}-byte key; re-send the "
                          f"original from {data['topic']} partition {data.get('partition')} offset {data.get('offset')} "
                          "yourself")
    if data.get("truncated"):
        raise ReplayError(f"letter holds only the first bytes of a {data['truncated']}-byte value; re-send the original "
                          f"from {data['topic']} partition {data.get('partition')} offset {data.get('offset')} yourself")
    key, value = data.get("key"), data.get("value")
    for name, part in (("key", key), ("value", value)):
        if part is not None and not isinstance(part, (bytes, bytearray)):
            raise ReplayError(f"dead letter's {name} is {type(part).__name__}, expected bin")
    partition = data.get("partition") if key is None and isinstance(data.get("partition"), int) else None
    return ProduceRequest(data["topic"], None if key is None else bytes(key),
                          None if value is None else bytes(value), partition)


# --------------------------------------------------------------------------
# the drivers


def producer(settings: Settings):
    """A batching kafka-python producer with the default (murmur2) partitioner.

    The worker's user-state table writes its changelog by the key's murmur2
    partition, so every producer of keyed input must hash the same way.
    """
    from kafka import KafkaProducer

    with broker_bootstrap(settings.broker):
        return KafkaProducer(**kafka_python_options(settings), client_id="dreamstream-replay",
                             acks="all", linger_ms=20, batch_size=256 * 1024, max_request_size=8 * 1024 * 1024)


def replay_dataset(settings: Settings, ds: "Dataset", rows: np.ndarray, pace: Pace = Pace(),
                   progress: bool = True) -> int:
    """Produce ``rows`` of ``ds`` onto ``watch-events`` at ``pace``; returns how many were sent."""
    from tqdm import tqdm

    topic = settings.topic(WATCH_EVENTS)
    prod = producer(settings)
    sent = 0
    try:
        with tqdm(total=int(len(rows)), unit="ev", desc=f"replay -> {topic}", disable=not progress) as bar:
            for key, value, _ts in paced(event_values(ds, rows), pace):
                # Record timestamp = now, not the recorded time: a broker with time-based
                # retention would delete years-old CreateTime records at once. ``ts`` in
                # the value is the event time the worker uses.
                prod.send(topic, key=key, value=value)
                sent += 1
                bar.update()
        prod.flush()
    finally:
        prod.close()
    log.info("replayed events=%d topic=%s", sent, topic)
    return sent


@dataclass
class Redriven:
    """What one ``replay --dlq`` run did with each letter it read."""

    sent: int = 0  # re-sent and acknowledged (committed past)
    null: int = 0  # null letters (no key and no value, or no letter at all): nothing to re-send, committed past
    refused: int = 0  # not re-drivable (not a letter, cut, naming a topic that is not an input): committed past, logged
    unmatched: int = 0  # reason did not contain --reason-contains: committed past
    failed: int = 0  # the producer refused or lost it (at once or on delivery): not committed, re-driven next run
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"re-sent={self.sent} null={self.null} refused={self.refused} unmatched={self.unmatched} "
                f"failed={self.failed}")


REDRIVE_CHUNK = 100  # letters sent before their deliveries are checked: at most this many re-sent again after a failure


def namespaces_seeing_again(settings: Settings) -> list[str]:
    """The other namespaces whose workers read the shared inputs a re-driven letter goes back to."""
    from dreamstream.index.manifest import IndexCorruptError
    from dreamstream.rollout import known_namespaces

    try:
        return [ns for ns in known_namespaces(settings) if ns != settings.namespace]
    except IndexCorruptError as err:
        raise ReplayError(f"cannot tell which namespaces read the shared inputs: {err}") from None


def check_shared_inputs(settings: Settings, yes: bool) -> list[str]:
    """Refuse a re-drive other namespaces would apply twice, unless ``yes``; returns those namespaces.

    A letter goes back onto ``watch-events`` (or ``item-features``), which
    every namespace reads: the event a namespace dead-lettered is seen again
    by every other one, which applied it (or dead-lettered it) already.
    """
    others = namespaces_seeing_again(settings)
    if others and not yes:
        names = ", ".join(ns or "(default)" for ns in others)
        raise ReplayError(f"re-driving namespace {settings.namespace or '(default)'!s}'s letters puts them back on the "
                          f"shared inputs, where namespace(s) {names} will see each event again (and apply it twice); "
                          "rerun with --yes to accept that, or retire the other namespaces first")
    return others


def redrive_dead_letters(settings: Settings, reason_contains: str | None = None, from_beginning: bool = False,
                         progress: bool = True, timeout_s: float = 30.0) -> Redriven:
    """Put every dead letter not yet re-driven back on its original topic.

    Reads ``watch-events-dlq`` with the consumer group ``<prefix>dreamstream-redrive``
    up to its end as of the start (letters that fail again land after it and
    wait for the next run), produces each letter's original key/value, then
    commits: a second run re-drives nothing. ``from_beginning`` rewinds the
    group to the start of the topic. Letters whose reason does not contain
    ``reason_contains`` are passed over (and committed past: rewind to see
    them again), as are null and refused letters (counted, logged).

    A letter the producer refuses at once or fails to deliver is a failure:
    the run stops there (nothing after it is sent), the commit stops before
    it, and :class:`ReplayError` says how many failed. Deliveries are
    checked every :data:`REDRIVE_CHUNK` letters, so at most that many sent
    after a failed one are re-sent by the next run.
    """
    from kafka import KafkaConsumer, TopicPartition
    from tqdm import tqdm

    dlq = settings.topic(DLQ)
    with broker_bootstrap(settings.broker):
        consumer = KafkaConsumer(**kafka_python_options(settings), group_id=settings.topic(REDRIVE_GROUP),
                                 client_id="dreamstream-redrive", enable_auto_commit=False, auto_offset_reset="earliest")
    prod = producer(settings)
    done = Redriven()
    inputs = frozenset({settings.topic(WATCH_EVENTS), settings.topic(ITEM_FEATURES)})  # where dead letters come from
    try:
        parts = consumer.partitions_for_topic(dlq) or set()
        if not parts:
            raise ReplayError(f"topic {dlq} does not exist on {settings.broker}; run `dreamstream topics` first")
        tps = [TopicPartition(dlq, p) for p in sorted(parts)]
        consumer.assign(tps)
        if from_beginning:
            consumer.seek_to_beginning(*tps)
        target = _read_targets(consumer, tps, deadline=time.monotonic() + min(timeout_s, 5.0))
        commit = {tp: consumer.position(tp) for tp in tps}  # every letter below is settled (sent, skipped)
        with tqdm(total=sum(target[tp] - consumer.position(tp) for tp in tps), unit="letter",
                  desc=f"re-drive {dlq}", disable=not progress) as bar:
            try:
                _redrive_until_failure(consumer, prod, tps, target, commit, done, reason_contains, inputs, timeout_s,
                                       bar)
            finally:  # a failure, a time-out or an interrupt: what was acknowledged is still committed
                consumer.commit({tp: _offset(commit[tp]) for tp in tps})
        if done.failures:
            raise ReplayError(f"{done.failed} letters could not be re-sent (first: {done.failures[0]}); they and the "
                              f"letters after them stay in {dlq} for the next run ({done.summary()})")
    finally:
        _close_dropping(prod)
        consumer.close(autocommit=False)
    log.info("re-drove from=%s reason_contains=%r %s", dlq, reason_contains, done.summary())
    return done


def _redrive_until_failure(consumer, prod, tps: list, target: dict, commit: dict, done: Redriven,
                           reason_contains: str | None, inputs: frozenset[str], timeout_s: float, bar) -> None:
    """Read every partition to its target, re-sending chunk by chunk; stop at the first failed letter.

    ``commit`` is moved past each chunk once every letter in it is settled,
    and, on a failure, to the failed letter itself.
    """
    pending = {tp for tp in tps if consumer.position(tp) < target[tp]}
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            raise ReplayError(f"could not read {tps[0].topic} to its end within {timeout_s:.0f}s")
        chunk: list = []  # (tp, letter offset, delivery future or None when nothing was sent)
        for tp, records in consumer.poll(timeout_ms=500, max_records=REDRIVE_CHUNK).items():
            for record in records:
                if record.offset >= target[tp]:
                    continue
                try:
                    chunk.append((tp, record.offset, _redrive_one(prod, record, reason_contains, inputs, done)))
                except Exception as err:  # kafka-python's send raises at once on a record it cannot take
                    _settle(prod, chunk, commit, done, timeout_s)
                    _failed(done, commit, tp, record.offset, err)
                    return
                bar.update()
        if not _settle(prod, chunk, commit, done, timeout_s):
            return
        for tp in list(pending):
            if consumer.position(tp) >= target[tp]:
                pending.discard(tp)
                commit[tp] = max(commit[tp], target[tp])


def _settle(prod, chunk: list, commit: dict, done: Redriven, timeout_s: float) -> bool:
    """Flush the chunk and ask each delivery; move ``commit`` up to its first failure. True: none failed.

    kafka-python's ``flush()`` only logs a failed batch, so each future is asked.
    """
    prod.flush(timeout=timeout_s)
    failed: set = set()
    for tp, offset, future in chunk:
        if tp in failed:
            continue  # past a failure in its partition: re-sent next run whatever its own outcome
        try:
            if future is not None:
                future.get(timeout=timeout_s)
                done.sent += 1
        except Exception as err:  # the broker refused or never answered: not sent
            _failed(done, commit, tp, offset, err)
            failed.add(tp)
            continue
        commit[tp] = max(commit[tp], offset + 1)
    return not failed


def _failed(done: Redriven, commit: dict, tp, offset: int, err: BaseException) -> None:
    done.failed += 1
    done.failures.append(f"{tp.topic}[{tp.partition}]@{offset}: {err!r}"[:300])
    commit[tp] = min(commit[tp], offset)
    log.error("re-sending dlq record partition=%d offset=%d failed: %r; stopping, the commit stays before it",
              tp.partition, offset, err)


def _read_targets(consumer, tps: list, deadline: float) -> dict:
    """Per partition, the offset to read up to: its end as of now.

    The larger of ListOffsets' answer and the high watermark of a first fetch:
    the embedded broker (tansu) answers ListOffsets with one past the *first*
    record of the last batch, so a batch of three records looks like one; the
    fetch high watermark is right on both it and Kafka. The fetch here is
    paused right after, so its records are read again by the caller's loop.
    """
    end = consumer.end_offsets(tps)
    start = {tp: consumer.position(tp) for tp in tps}
    watermark: dict = {tp: 0 for tp in tps if end[tp] == 0}  # empty on any broker
    while len(watermark) < len(tps) and time.monotonic() < deadline:
        consumer.poll(timeout_ms=200, max_records=1, update_offsets=False)
        for tp in tps:
            if consumer.highwater(tp) is not None:
                watermark[tp] = consumer.highwater(tp)
    for tp in tps:
        consumer.seek(tp, start[tp])
    return {tp: max(end[tp], watermark.get(tp, 0)) for tp in tps}


def _redrive_one(prod, record, reason_contains: str | None, inputs: frozenset[str], done: Redriven):
    """Send one letter's original; its delivery future (None: nothing sent, counted in ``done`` with the reason logged).

    May raise: kafka-python's ``send`` refuses some records at once (the
    caller counts that as this letter's failure).
    """
    if record.value is None:
        done.null += 1
        return None
    try:
        request = redrive_request(record.value, reason_contains, inputs)
    except ReplayError as err:
        done.refused += 1
        log.warning("skipping dlq record partition=%d offset=%d: %s", record.partition, record.offset, err)
        return None
    if request is None:
        done.unmatched += 1
        return None
    if request.key is None and request.value is None:  # kafka-python's send raises on it; there is nothing to re-send
        done.null += 1
        log.warning("skipping dlq record partition=%d offset=%d: its letter holds neither a key nor a value",
                    record.partition, record.offset)
        return None
    return prod.send(request.topic, key=request.key, value=request.value, partition=request.partition)


def _close_dropping(prod) -> None:
    """Close the producer without sending what is still queued: after an interruption, letters never committed.

    Every chunk is flushed before the next is sent, so only an interruption
    (Ctrl-C, a bug) leaves letters queued; ``close(timeout=0)`` force-closes
    the sender instead of sending them. kafka-python quirk: it first
    ``flush(0)``es, which raises ``KafkaTimeoutError`` while anything is
    queued, before its force-close; the letters then die with the process
    (the sender is a daemon thread) and the next run re-drives them.
    """
    try:
        prod.close(timeout=0)
    except Exception as err:  # KafkaTimeoutError: records still queued
        log.warning("letters queued after the last commit were not flushed (%r); the next run re-drives them", err)


def _offset(position: int):
    """kafka-python 2 takes OffsetAndMetadata(offset, metadata), 3 adds leader_epoch."""
    from kafka.structs import OffsetAndMetadata

    try:
        return OffsetAndMetadata(position, "", -1)
    except TypeError:
        return OffsetAndMetadata(position, "")
