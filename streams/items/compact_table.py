"""A fixed-capacity table of item vectors: one matrix, one hashed id index, no Python object per item.

Why: a ``dict`` of ``str -> ndarray`` costs ~475 B per 64-d float32 video
(the str, the array object, the dict entry), so a 10M-video catalogue is
~5 GB in every worker. Here an item is one row of a preallocated matrix
(``dim * itemsize`` bytes), its 64-bit id hash (8 B), a 32-bit check of its
id (4 B), a CLOCK state byte and 1.25-2.5 int32 index slots (5-10 B):
~146-151 B per 64-d float16 video, ~274-279 B float32.

How: the id's Python ``hash`` (SipHash, cached on the str, salted per
process: the table is never written to disk) picks a slot of an
open-addressing index (linear probing, power-of-two size, grown at 80%
load) whose int32 entry is the item's row. A lookup is a few vectorised
probes over the whole batch. The CRC-32 of the id's UTF-8 bytes is kept per
row and compared when a video is stored or deleted, so two ids whose 64-bit
hashes collide are told apart (the second is refused with a reason, never
given the first's vector; a lookup trusts the key alone, see
:meth:`CompactTable.find`). The matrix and the per-row arrays are allocated at full capacity
with ``np.empty``: the OS commits pages only when rows are written, so the
resident size follows the rows used, and the capacity is the ceiling.

When full, :meth:`CompactTable.put_rows` either refuses (a table that must
hold everything: the memory store) or evicts by CLOCK (a cache: the RocksDB
store's hot videos); both are the caller's choice.
"""
from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np

EMPTY, GONE = -1, -2  # index slot: never used / freed (a tombstone keeps later probes of a chain reachable)
COLD, HOT, IDLE = 0, 1, 2  # row state for CLOCK: live and not used since the hand passed / live and used / not live
MIN_SLOTS = 1024
GROW_AT = 0.8  # used + freed slots over slots: above it the index doubles (live keys rehashed)


def id_keys(videos: Sequence[str]) -> np.ndarray:
    """The 64-bit index keys of ids (their Python hash, cached on each str: ~30 ns an id)."""
    return np.fromiter(map(hash, videos), np.int64, len(videos))


def id_checks(videos: Sequence[str]) -> np.ndarray:
    """The 32-bit checks of ids: CRC-32 of the UTF-8 bytes, independent of ``hash``."""
    return np.fromiter((zlib.crc32(v.encode("utf-8", "surrogatepass")) for v in videos), np.uint32, len(videos))


def row_bytes(dim: int, dtype: np.dtype) -> int:
    """Resident bytes of one item at the index's worst load: vector, key, check, 2.5 slots, CLOCK state."""
    return dim * np.dtype(dtype).itemsize + 8 + 4 + 10 + 1


class CompactTable:
    """``capacity`` rows of ``dim`` values of ``dtype``, found by id through a hashed index."""

    def __init__(self, dim: int, dtype: np.dtype | str, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a table needs room for at least one item (capacity {capacity})")
        self.dim, self.dtype, self.capacity = dim, np.dtype(dtype), capacity
        self.matrix = np.empty((capacity, dim), self.dtype)  # pages committed as rows are written
        self.keys = np.empty(capacity, np.int64)
        self.checks = np.empty(capacity, np.uint32)
        self.state = np.full(capacity, IDLE, np.uint8)  # CLOCK: HOT on a hit, COLD as the hand passes
        self.used = 0  # rows 0..used-1 were handed out at least once
        self.free: list[int] = []  # rows given back by deletes, reused first
        self.live = 0
        self.hand = 0
        self.slots = np.full(MIN_SLOTS, EMPTY, np.int32)
        self.gone = 0  # tombstones in the index

    def __len__(self) -> int:
        return self.live

    @property
    def resident_bytes(self) -> int:
        """Bytes of the rows handed out so far (pages of the rest are never touched) and of the index."""
        per_row = self.matrix.itemsize * self.dim + 8 + 4 + 1  # vector, key, check, CLOCK state
        return self.used * per_row + self.slots.nbytes

    # --- finding -------------------------------------------------------------
    def _probe(self, keys: np.ndarray, checks: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Per key: its row (-1: absent, -2: another id's) and its slot (or -1). Vectorised over the batch.

        Without ``checks`` (a lookup) a key is taken as its id: see :meth:`find`.
        """
        n = len(keys)
        rows, where = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
        if not n or not self.live:
            return rows, where
        mask = len(self.slots) - 1
        pos = keys & mask
        todo = np.arange(n)
        while todo.size:
            p = pos[todo]
            r = self.slots[p].astype(np.int64)
            live = r >= 0
            hit = np.zeros(len(todo), bool)
            hit[live] = self.keys[r[live]] == keys[todo[live]]
            rows[todo[hit]], where[todo[hit]] = r[hit], p[hit]
            todo = todo[~hit & (r != EMPTY)]  # a tombstone or another key: the chain goes on
            pos[todo] = (pos[todo] + 1) & mask
        if checks is None:
            return rows, where
        found = rows >= 0
        bad = found.copy()
        bad[found] = self.checks[rows[found]] != checks[found]
        rows[bad], where[bad] = -2, -1  # -2: the slot's key is another id's (a 64-bit hash collision)
        return rows, where

    def find(self, videos: Sequence[str]) -> np.ndarray:
        """Rows of ``videos`` (-1 where absent), and each found row marked recently used.

        The 64-bit key alone decides: computing every looked-up id's CRC was
        ~55% of a lookup. Stored ids never share a key (a put checks), so
        the one error left is an id that is *not* stored whose hash equals a
        stored one's: it would be served that video's vector instead of a
        dead letter, with probability (stored ids) / 2**64 per such lookup
        (5e-13 at 10M videos).
        """
        rows, _ = self._probe(id_keys(videos), None)
        self.state[rows[rows >= 0]] = HOT
        return rows

    def gather(self, rows: np.ndarray, out: np.ndarray) -> None:
        """``out[i] = matrix[rows[i]]`` (as float32) where ``rows[i] >= 0``."""
        hit = rows >= 0
        out[hit] = self.matrix[rows[hit]]

    # --- changing ------------------------------------------------------------
    def put_rows(self, videos: Sequence[str], vectors: np.ndarray, evict: bool) -> np.ndarray:
        """Store ``vectors[i]`` for ``videos[i]`` (the last wins within a batch); per item True if stored.

        A video already present is overwritten in place. A new one takes a
        free row; with none left it evicts a not-recently-used row
        (``evict``) or is refused (False). A 64-bit hash collision with
        another stored id is refused too.
        """
        n = len(videos)
        stored = np.zeros(n, bool)
        if not n:
            return stored
        keys, checks = id_keys(videos), id_checks(videos)
        uniq, last_rev, group_rev = np.unique(keys[::-1], return_index=True, return_inverse=True)
        order = np.argsort(last_rev)[::-1]  # keys in the order of their last occurrence (a full table keeps the first)
        pick = n - 1 - last_rev[order]  # one entry per key: its last occurrence
        rows, _ = self._probe(keys[pick], checks[pick])
        ok = rows >= 0
        self.matrix[rows[ok]] = vectors[pick[ok]]
        self.state[rows[ok]] = HOT
        new = np.flatnonzero(rows == -1)  # -2: a hash collision with another id, refused
        new_rows = self._rows_for(len(new), evict)
        new = new[:len(new_rows)]
        if len(new):
            self._insert(keys[pick[new]], checks[pick[new]], new_rows)
            self.matrix[new_rows] = vectors[pick[new]]
            self.state[new_rows] = COLD  # a new row earns its second chance by a hit
            ok[new] = True
        by_key = np.empty(len(ok), bool)
        by_key[order] = ok
        return by_key[group_rev][::-1]  # every copy of a key as its last copy fared

    def refresh(self, videos: Sequence[str], vectors: np.ndarray) -> None:
        """Overwrite the vectors of those ``videos`` that are present; others are not added (a cache's write-through)."""
        if not self.live or not len(videos):
            return
        rows, _ = self._probe(id_keys(videos), id_checks(videos))
        there = rows >= 0  # a video twice in the batch: the last write is the last assignment
        self.matrix[rows[there]] = vectors[there]

    def delete(self, videos: Sequence[str]) -> int:
        """Remove ``videos`` (absent ones are ignored); how many were there."""
        rows, where = self._probe(id_keys(videos), id_checks(videos))
        hit = rows >= 0
        rows, where = np.unique(rows[hit]), np.unique(where[hit])
        self._release(rows, where)
        return len(rows)

    def _release(self, rows: np.ndarray, where: np.ndarray) -> None:
        self.slots[where] = GONE
        self.gone += len(where)
        self.state[rows] = IDLE
        self.free.extend(rows.tolist())
        self.live -= len(rows)

    def _rows_for(self, n: int, evict: bool) -> np.ndarray:
        """``n`` rows to write new items into: free ones, never-used ones, then (``evict``) CLOCK victims."""
        take = [self.free.pop() for _ in range(min(n, len(self.free)))]
        fresh = min(n - len(take), self.capacity - self.used)
        rows = np.concatenate([np.array(take, np.int64), np.arange(self.used, self.used + fresh, dtype=np.int64)])
        self.used += fresh
        short = n - len(rows)
        if short and evict:
            victims = self._victims(min(short, self.live))
            self._release(victims, self._probe(self.keys[victims], self.checks[victims])[1])
            del self.free[len(self.free) - len(victims):]  # the victims were just freed; they are handed out here
            rows = np.concatenate([rows, victims])
        return rows

    def _victims(self, n: int) -> np.ndarray:
        """CLOCK: ``n`` rows not referenced since the hand last passed; the hand clears bits as it goes."""
        out: list[np.ndarray] = []
        need = n
        while need:
            end = min(self.hand + max(4 * need, 1024), self.used)
            span = np.arange(self.hand, end)
            cold = span[self.state[span] == COLD][:need]
            upto = cold[-1] + 1 if len(cold) == need else end
            passed = self.state[self.hand:upto]
            passed[passed == HOT] = COLD
            self.state[cold] = IDLE  # taken: a second lap of the hand in this call must not take it again
            out.append(cold)
            need -= len(cold)
            self.hand = upto if upto < self.used else 0
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def _insert(self, keys: np.ndarray, checks: np.ndarray, rows: np.ndarray) -> None:
        """Index new (absent, distinct) keys at ``rows``; grows the index first if it would pass ``GROW_AT``."""
        if (self.live + self.gone + len(keys)) > GROW_AT * len(self.slots):
            self._rehash(self.live + len(keys))
        self.keys[rows], self.checks[rows] = keys, checks
        self._place(keys, rows)
        self.live += len(keys)

    def _place(self, keys: np.ndarray, rows: np.ndarray) -> None:
        """Write each row into the first empty or freed slot of its key's chain (first come, first served)."""
        mask = len(self.slots) - 1
        pos = keys & mask
        todo = np.arange(len(keys))
        while todo.size:
            p = pos[todo]
            open_ = self.slots[p] < 0
            cand, at = todo[open_], p[open_]
            self.gone -= int((self.slots[at] == GONE).sum())  # counted once a slot: every writer saw it GONE
            self.slots[at] = rows[cand]  # several keys may want one slot: the last write wins it
            placed = np.zeros(len(keys), bool)
            placed[cand[self.slots[at] == rows[cand]]] = True
            todo = todo[~placed[todo]]
            pos[todo] = (pos[todo] + 1) & mask

    def _rehash(self, live: int) -> None:
        """A new index sized for ``live`` keys at most half full, every live row placed again (tombstones dropped)."""
        size = MIN_SLOTS
        while live > size // 2:
            size *= 2
        rows = self.slots[self.slots >= 0].astype(np.int64)
        self.slots = np.full(size, EMPTY, np.int32)
        self.gone = 0
        self._place(self.keys[rows], rows)
