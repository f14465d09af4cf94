"""A shard's item ids, packed: one UTF-8 blob and an offset per row, not a Python str per item.

Why: a Python ``str`` costs ~50 bytes of header plus an 8-byte pointer in
an object array, and an ``id -> (shard, row)`` dict another ~100: more than
the whole 80-bytes-per-item budget of a compressed index (issue 26). Packed,
an id costs its UTF-8 bytes plus a 4-byte offset; strings are made only
for the rows a search returns. A shard's ids are sorted (the builder writes
``ItemStore.snapshot`` order), so ``find`` is a binary search, and UTF-8
byte order is code-point order, the order Python sorted them in.

File format (``shard-NNN.ids.bin``): ``DSIDS1\\n``, the count as uint64,
``count + 1`` uint64 offsets, the blob; all little-endian. Versions written
before it keep their JSON list (``shard-NNN.ids.json``), read by the same loader.
"""
from __future__ import annotations

import json
from typing import Iterable

import numpy as np

MAGIC = b"DSIDS1\n"
_ENCODING = ("utf-8", "surrogatepass")  # any str a key decoded to round-trips


class ItemIds:
    """Row -> id of one shard, packed; ``len``, ``[row]``, ``take(rows)`` and ``find(id)``."""

    def __init__(self, blob: bytes, offsets: np.ndarray) -> None:
        self.blob = blob  # bytes: slicing it is the cheapest way to make one id's str
        self.offsets = offsets.astype(np.uint32 if offsets[-1] < 2**32 else np.uint64)  # [n + 1]

    @classmethod
    def from_list(cls, ids: Iterable[str]) -> "ItemIds":
        encoded = [str(i).encode(*_ENCODING) for i in ids]
        offsets = np.zeros(len(encoded) + 1, np.uint64)
        offsets[1:] = np.cumsum(np.fromiter((len(e) for e in encoded), np.uint64, len(encoded)))
        return cls(b"".join(encoded), offsets)

    @classmethod
    def from_bytes(cls, data: bytes) -> "ItemIds":
        """Parse an ``ids.bin`` file; ``ValueError`` when it is not one."""
        head = len(MAGIC) + 8
        if data[:len(MAGIC)] != MAGIC or len(data) < head:
            raise ValueError("not a dreamstream ids file (bad magic)")
        count = int(np.frombuffer(data, "<u8", 1, len(MAGIC))[0])
        if len(data) < head + 8 * (count + 1):
            raise ValueError(f"ids file says {count} ids but is {len(data)} bytes")
        offsets = np.frombuffer(data, "<u8", count + 1, head)
        blob = bytes(data[head + 8 * (count + 1):])
        if offsets[0] != 0 or int(offsets[-1]) != len(blob) or np.any(np.diff(offsets.astype(np.int64)) < 0):
            raise ValueError("ids file offsets do not describe its blob")
        return cls(blob, offsets)

    @classmethod
    def from_json(cls, data: bytes) -> "ItemIds":
        """The JSON list of versions written before the packed format."""
        return cls.from_list(json.loads(data))

    def to_bytes(self) -> bytes:
        count = np.array([len(self)], "<u8")
        return MAGIC + count.tobytes() + self.offsets.astype("<u8").tobytes() + self.blob

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, row: int) -> str:
        if not -len(self) <= row < len(self):
            raise IndexError(row)
        row %= len(self)
        return self.blob[int(self.offsets[row]):int(self.offsets[row + 1])].decode(*_ENCODING)

    def __iter__(self):
        return (self[row] for row in range(len(self)))

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The ids of ``rows`` (each in range) as an object array of str (only these strings are made)."""
        rows = np.asarray(rows)
        starts, ends = self.offsets[rows.reshape(-1)].tolist(), self.offsets[rows.reshape(-1) + 1].tolist()
        blob = self.blob
        out = np.empty(rows.size, dtype=object)
        out[:] = [blob[s:e].decode(*_ENCODING) for s, e in zip(starts, ends)]
        return out.reshape(rows.shape)

    def find(self, item: str) -> int:
        """The row of ``item`` (binary search: ids are sorted), or -1."""
        key = str(item).encode(*_ENCODING)
        lo, hi = 0, len(self)
        while lo < hi:
            mid = (lo + hi) // 2
            here = self.blob[int(self.offsets[mid]):int(self.offsets[mid + 1])]
            if here < key:
                lo = mid + 1
            elif here > key:
                hi = mid
            else:
                return mid
        return -1

    @property
    def nbytes(self) -> int:
        """Bytes held in memory (what the client's per-item budget counts)."""
        return len(self.blob) + int(self.offsets.nbytes)
