"""Decoding and validation of ``watch-events`` messages: bytes in, ``Event``s and ``Rejection``s out.

A pure function on purpose: the agent must never die on bad input and never
drop it silently, so every way a message can be wrong is decided here, where
hypothesis can throw arbitrary bytes and values at it, and each rejection
carries a reason a person can act on (it ends up in ``watch-events-dlq``).

A message value is one event map, or an array of them (a client's batch).
All events of one message share the message's (partition, offset); ``index``
tells them apart so the idempotence check can resume inside a batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from dreamstream import codec
from dreamstream.engagement import IMPRESSION, KINDS, WATCH

MAX_EVENT_BYTES = 64 * 1024
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # larger values are refused without unpacking them
MAX_ID_BYTES = codec.MAX_ID_BYTES
# Most events one array message may carry: a client batches a few events per upload. Beyond it the excess is one
# dead letter (with the count), so a hostile 4 MiB array of a million nils costs a bounded amount of work.
MAX_EVENTS_PER_MESSAGE = 1000
# Every label a rejection can carry: the metric's label set is fixed (the detail stays in the letter's reason).
LABELS = ("key-too-large", "null-value", "not-bytes", "too-large", "not-msgpack", "not-an-event", "empty-array",
          "too-many-events", "invalid-event", "unknown-video", "item-features", "item-tower-output", "item-watchers")
MAX_DAY_MS = 86_400_000
REQUIRED = ("user", "video", "ts", "watch_ms", "duration_ms")


class Event(NamedTuple):
    """One valid watch or impression event and where it came from.

    A NamedTuple, not a frozen dataclass: one is built per event on the hot
    path, and a frozen dataclass's ``__init__`` (a guarded setattr per field)
    cost a tenth of the worker's decode time.
    """

    user: str
    video: str
    ts: int
    watch_ms: float
    duration_ms: float
    kind: str
    partition: int
    offset: int
    index: int = 0
    raw: bytes | None = None  # the event's own bytes (the message, or its array element packed): a dead letter's value

    @property
    def position(self) -> tuple[int, int]:
        """Order of this event inside its partition: (offset, index within the message)."""
        return (self.offset, self.index)


@dataclass(frozen=True, slots=True)
class Rejection:
    """One input that cannot be applied, with the bytes to put in the dead letter and a label from :data:`LABELS`."""

    reason: str
    value: bytes | None
    label: str = "invalid-event"


def _ident(value: Any, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"field '{field}' must be a str or int id, got {type(value).__name__}")
    text = str(value)
    if not text:
        raise ValueError(f"field '{field}' is empty")
    if len(text) * 4 > MAX_ID_BYTES and len(text.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:  # <= 4 bytes a char
        raise ValueError(f"field '{field}' is longer than {MAX_ID_BYTES} bytes")
    return text


def _number(value: Any, field: str, low: float, high: float, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"field '{field}' must be a number, got {type(value).__name__}")
    number = float(value) if not isinstance(value, int) or abs(value) < 2**63 else math.inf
    if not math.isfinite(number):
        raise ValueError(f"field '{field}' must be finite, got {value!r}")
    if number < low or number > high or (low_open and number == low):
        bound = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ValueError(f"field '{field}' = {value!r} is outside {bound}")
    return number


def parse_event(obj: Any, key: bytes | None, now_ms: int, partition: int, offset: int, index: int,
                raw: bytes | None = None) -> Event:
    """One event map -> ``Event``; raises ``ValueError`` saying what is wrong."""
    return (_typical(obj, key, now_ms, partition, offset, index, raw)
            or _checked(obj, key, now_ms, partition, offset, index, raw))


_FAST_ID_CHARS = MAX_ID_BYTES // 4  # a str id this short is within MAX_ID_BYTES whatever its characters
_NUMBER = (int, float)


def _typical(obj: Any, key: bytes | None, now_ms: int, partition: int, offset: int, index: int,
             raw: bytes | None = None) -> Event | None:
    """The everyday event in a few exact type checks, or None: then :func:`_checked` decides and explains.

    Why two paths: the full checks, each able to say what is wrong, cost
    ~2 µs an event, a tenth of the worker's time at 31,000 events/s. Almost
    every event is a map of short str ids, an int ``ts`` and numbers in
    range, which this accepts at a fraction of that. It accepts nothing
    :func:`_checked` would refuse, and builds the same ``Event`` (a
    hypothesis test holds the two to that); anything unusual (int ids, a
    bool, NaN, a mismatched key) simply goes the long way.
    """
    if type(obj) is not dict:
        return None
    user, video, ts = obj.get("user"), obj.get("video"), obj.get("ts")
    watch_ms, duration_ms, kind = obj.get("watch_ms"), obj.get("duration_ms"), obj.get("kind", WATCH)
    if not (type(user) is str and type(video) is str and type(ts) is int and kind in KINDS
            and type(watch_ms) in _NUMBER and type(duration_ms) in _NUMBER):
        return None
    if not (0 < len(user) <= _FAST_ID_CHARS and 0 < len(video) <= _FAST_ID_CHARS and 0 <= ts <= now_ms + MAX_DAY_MS
            and 0 <= watch_ms <= MAX_DAY_MS and 0 < duration_ms <= MAX_DAY_MS):
        return None
    if key is not None and (not user.isascii() or key != user.encode("ascii")):
        return None
    return Event(user, video, ts, float(watch_ms), float(duration_ms), kind, partition, offset, index, raw)


def _checked(obj: Any, key: bytes | None, now_ms: int, partition: int, offset: int, index: int,
             raw: bytes | None = None) -> Event:
    """Every check, one at a time, each failing with a reason a person can act on."""
    if not isinstance(obj, dict):
        raise ValueError(f"an event must be a map, got {type(obj).__name__}")
    missing = [f for f in REQUIRED if f not in obj]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    user = _ident(obj["user"], "user")
    video = _ident(obj["video"], "video")
    ts = obj["ts"]
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise ValueError(f"field 'ts' must be an int (ms since epoch), got {type(ts).__name__}")
    if ts < 0 or ts > now_ms + MAX_DAY_MS:
        raise ValueError(f"field 'ts' = {ts} is negative or more than a day in the future (now {now_ms})")
    watch_ms = _number(obj["watch_ms"], "watch_ms", 0.0, MAX_DAY_MS)
    duration_ms = _number(obj["duration_ms"], "duration_ms", 0.0, MAX_DAY_MS, low_open=True)
    kind = obj.get("kind", WATCH)
    if kind is None:
        kind = WATCH
    if kind not in KINDS:
        raise ValueError(f"field 'kind' must be one of {'/'.join(KINDS)}, got {kind!r}")
    if key is not None and key != codec.key_bytes(user):
        raise ValueError(f"message key {key[:64]!r} does not match the event's user {user[:64]!r}")
    return Event(user, video, ts, watch_ms, duration_ms, kind, partition, offset, index, raw)


def decode_message(
    key: bytes | None, value: bytes | None, now_ms: int, partition: int = 0, offset: int = 0
) -> tuple[list[Event], list[Rejection]]:
    """A raw ``watch-events`` message -> its valid events (in order) and its rejections.

    Rejections of a single element of an array carry that element re-packed,
    so a fixed copy can be re-driven on its own; whole-message rejections
    carry the original bytes. A key longer than any user id
    (:data:`MAX_ID_BYTES`) matches no event, so its message is one letter,
    not one per event: each letter copies the key (cut, but a thousand cut
    copies of a hostile key are still a thousand).
    """
    if key is not None and len(key) > MAX_ID_BYTES:
        return [], [Rejection(f"message key of {len(key)} bytes is over the {MAX_ID_BYTES}-byte limit of a user id "
                              "(the key must be the events' user)",
                              bytes(value) if isinstance(value, (bytes, bytearray)) else None,
                              "key-too-large")]
    if value is None:
        return [], [Rejection("value is null (a tombstone is not an event)", value, "null-value")]
    if not isinstance(value, (bytes, bytearray)):
        return [], [Rejection(f"value is {type(value).__name__}, not bytes", None, "not-bytes")]
    if len(value) > MAX_MESSAGE_BYTES:
        return [], [Rejection(f"message of {len(value)} bytes is over the {MAX_MESSAGE_BYTES}-byte limit", bytes(value), "too-large")]
    try:
        obj = codec.unpack(bytes(value))
    except Exception as err:  # msgpack raises several unrelated types on garbage
        return [], [Rejection(f"value is not msgpack: {type(err).__name__}: {str(err)[:200]}", bytes(value), "not-msgpack")]
    if isinstance(obj, dict):
        if len(value) > MAX_EVENT_BYTES:
            return [], [Rejection(f"event of {len(value)} bytes is over the {MAX_EVENT_BYTES}-byte limit", bytes(value), "too-large")]
        try:
            return [parse_event(obj, key, now_ms, partition, offset, 0, bytes(value))], []
        except ValueError as err:
            return [], [Rejection(str(err), bytes(value))]
    if not isinstance(obj, list):
        return [], [Rejection(f"value must be a map or an array of maps, got {type(obj).__name__}", bytes(value), "not-an-event")]
    if not obj:
        return [], [Rejection("value is an empty array: no event to apply", bytes(value), "empty-array")]
    events: list[Event] = []
    rejections: list[Rejection] = []
    if len(obj) > MAX_EVENTS_PER_MESSAGE:
        excess = len(obj) - MAX_EVENTS_PER_MESSAGE
        rejections.append(Rejection(f"array of {len(obj)} events is over the {MAX_EVENTS_PER_MESSAGE}-event limit: its "
                                    f"last {excess} (from element {MAX_EVENTS_PER_MESSAGE}) are not applied; send them in "
                                    f"smaller messages", codec.pack(obj[MAX_EVENTS_PER_MESSAGE:]), "too-many-events"))
        obj = obj[:MAX_EVENTS_PER_MESSAGE]
    for index, element in enumerate(obj):
        packed = codec.pack(element)
        if len(packed) > MAX_EVENT_BYTES:
            rejections.append(Rejection(f"array element {index}: event of {len(packed)} bytes is over the {MAX_EVENT_BYTES}-byte limit", packed, "too-large"))
            continue
        try:
            events.append(parse_event(element, key, now_ms, partition, offset, index, packed))
        except ValueError as err:
            rejections.append(Rejection(f"array element {index}: {err}", packed))
    return events, rejections


__all__ = ["Event", "Rejection", "decode_message", "parse_event", "IMPRESSION", "WATCH"]
