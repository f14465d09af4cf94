"""A live video's refinement row: its tower vector and the running sum of its watchers, applied once per watch.

Pure: ``item-watchers`` values in, rows out; the item refiner
(``streams.item_refiner``) keeps one row per live video in a changelogged
table and publishes ``dreamumm_ref.refined_vector`` of it.

Exactly once in effect: the worker sends a watch's record when it applies
the watch, and again if it replays the batch after a crash or a rebalance
(``streams.checkpoint``). A row remembers, per ``watch-events`` partition,
the last source position (offset, index) it applied; the records of one
partition reach the video's ``item-watchers`` partition in source order
(one owner at a time, one producer), so a record at or before the mark is
a replay. The marks are in the same row as the sum, so the changelog never
holds one without the other.

One row belongs to one item space (``Manifest.item_space`` of the bundle
that embedded the tower vector; a hot reload keeps it): a watcher's vector
from another space is not added (counted as ``other-space``), and a tower
vector of another space starts the row afresh.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from dreamstream import codec
from dreamstream.vectors import checked_matrix

TOWER, WATCH = "tower", "watch"
APPLIED, STARTED, REPLAY, OTHER_SPACE = "applied", "tower", "replay", "other-space"  # outcomes (the metric's labels)


@dataclass
class RefinementRow:
    """One live video: its item space, tower vector, watcher sum and the source positions already applied."""

    space: str  # the item space of the tower vector and the watchers (Manifest.item_space)
    total: np.ndarray  # float64 [D]: sum of weight * unit user vector over the watchers applied
    tower: np.ndarray | None = None  # float32 [D]: the item tower's vector (None until its record arrives)
    watchers: int = 0
    marks: dict[int, tuple[int, int]] = field(default_factory=dict)  # watch-events partition -> last (offset, index)
    ts: int = 0  # newest record time (ms): the published vector's ts


@dataclass(frozen=True)
class WatchersRecord:
    """A parsed ``item-watchers`` value."""

    kind: str  # TOWER or WATCH
    video: str
    vector: np.ndarray  # the tower vector, or the watcher's unit user vector
    space: str
    ts: int
    weight: float = 0.0
    src: tuple[int, int, int] = (0, 0, 0)  # watch-events (partition, offset, index) of a watch


def watcher_rows(watchers: list[tuple[Any, np.ndarray, float]], space: str) -> list[tuple[bytes, bytes]]:
    """item-watchers records (key: the video) of a batch's watches of live videos (``BatchResult.watchers``).

    In source order (partition, offset, index), not in the order the batch's
    waves noted them (wave 0 holds every user's first event of the batch, so
    a later offset can come first): the refiner takes a position at or
    before its mark for a replay, so a watch sent after a later one of its
    partition would be dropped (the SIGKILL e2e test caught exactly that).
    """
    ordered = sorted(watchers, key=lambda w: (w[0].partition, w[0].offset, w[0].index))
    return [(codec.key_bytes(ev.video), codec.pack(codec.watcher_record(ev.video, unit, weight, space, ev.partition,
                                                                        ev.offset, ev.index, ev.ts)))
            for ev, unit, weight in ordered]


def parse_batch(values: Sequence[bytes | None], dim: int) -> list[WatchersRecord | ValueError]:
    """``item-watchers`` values -> records, or the ``ValueError`` saying what is wrong (the record becomes a dead letter).

    The vectors of the whole batch are checked in one ``checked_matrix``
    (width, finite, norm; unit rows out): checked one by one they cost more
    than everything else the refiner does per record.
    """
    fields: list[tuple | ValueError] = []
    for value in values:
        try:
            fields.append(_fields(value))
        except ValueError as err:
            fields.append(err)
    raws = [f[2] for f in fields if not isinstance(f, ValueError)]
    vectors, errors = checked_matrix(raws, dim)
    out: list[WatchersRecord | ValueError] = []
    row = 0
    for f in fields:
        if isinstance(f, ValueError):
            out.append(f)
            continue
        kind, video, _, space, ts, weight, src = f
        out.append(ValueError(errors[row]) if errors[row] is not None
                   else WatchersRecord(kind, video, vectors[row], space, ts, weight, src))
        row += 1
    return out


def parse(value: bytes | None, dim: int) -> WatchersRecord:
    """One ``item-watchers`` value -> a record; ``ValueError`` says what is wrong."""
    parsed = parse_batch([value], dim)[0]
    if isinstance(parsed, ValueError):
        raise parsed
    return parsed


def _fields(value: bytes | None) -> tuple[str, str, bytes, str, int, float, tuple[int, int, int]]:
    """(kind, video, vector bytes, space, ts, weight, src) of a value, its vector unchecked; ``ValueError`` if unreadable."""
    obj = codec.unpack_map(value)
    kind = obj.get("kind")
    if kind not in (TOWER, WATCH):
        raise ValueError("field 'kind' must be 'tower' or 'watch'")
    video, space, ts = obj.get("video"), obj.get("space"), obj.get("ts")
    if not isinstance(video, str) or not video or not isinstance(space, str) or isinstance(ts, bool) or not isinstance(ts, int):
        raise ValueError("fields 'video' and 'space' must be non-empty str and 'ts' an int")
    name = "vector" if kind == TOWER else "user"
    raw = obj.get(name)
    if not isinstance(raw, (bytes, bytearray)):
        raise ValueError(f"field '{name}' must be float32 as bin")
    if kind == TOWER:
        return kind, video, bytes(raw), space, ts, 0.0, (0, 0, 0)
    weight, src = obj.get("weight"), obj.get("src")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not np.isfinite(weight):
        raise ValueError("field 'weight' must be a finite number")
    if (not isinstance(src, list) or len(src) != 3 or any(isinstance(x, bool) or not isinstance(x, int) or x < 0
                                                          for x in src)):
        raise ValueError("field 'src' must be [partition, offset, index] of non-negative ints")
    return kind, video, bytes(raw), space, ts, float(weight), (src[0], src[1], src[2])


def apply(row: RefinementRow | None, record: WatchersRecord) -> tuple[RefinementRow, str]:
    """``row`` after ``record`` (a new row when there was none) and the outcome; the row is changed in place."""
    if record.kind == TOWER:
        if row is None or row.space != record.space:
            row = RefinementRow(record.space, np.zeros(len(record.vector), np.float64))
        row.tower, row.ts = record.vector, max(row.ts, record.ts)
        return row, STARTED
    if row is None:
        row = RefinementRow(record.space, np.zeros(len(record.vector), np.float64))
    if row.space != record.space:
        return row, OTHER_SPACE
    partition, offset, index = record.src
    if partition in row.marks and row.marks[partition] >= (offset, index):
        return row, REPLAY
    row.total += record.weight * record.vector.astype(np.float64)
    row.watchers += 1
    row.marks[partition] = (offset, index)
    row.ts = max(row.ts, record.ts)
    return row, APPLIED


def encode(row: RefinementRow) -> bytes:
    """A row as the table stores it (msgpack; the sum in float64 so a long-lived row does not drift)."""
    return codec.pack({"space": row.space, "total": np.ascontiguousarray(row.total, "<f8").tobytes(),
                       "tower": None if row.tower is None else codec.vec_to_bin(row.tower), "watchers": row.watchers,
                       "marks": {str(p): list(m) for p, m in row.marks.items()}, "ts": row.ts})


def decode(raw: bytes) -> RefinementRow:
    """A stored row back."""
    obj: dict[str, Any] = codec.unpack(raw)
    tower = obj.get("tower")
    return RefinementRow(obj["space"], np.frombuffer(obj["total"], "<f8").astype(np.float64),
                         None if tower is None else codec.bin_to_vec(tower), int(obj["watchers"]),
                         {int(p): (int(m[0]), int(m[1])) for p, m in obj["marks"].items()}, int(obj["ts"]))
