"""The partition of a key as Kafka's default partitioner places it (murmur2, positive, modulo).

Every producer of a keyed topic must agree on it: compaction keeps one value
per key *per partition*, and readers that look a key up (``retrieve``) scan
only the partition this function names.

The answers for the most recent keys are remembered: murmur2 here is pure
Python, ~2 µs a key, and the worker partitions a record per touched user
per batch, mostly the same users batch after batch (a bounded cache, ~40 MB
at most).
"""
from __future__ import annotations

from functools import lru_cache

from kafka.partitioner.default import murmur2


@lru_cache(maxsize=1 << 18)
def kafka_partition(key: bytes, partitions: int) -> int:
    """The partition Java's and kafka-python's default partitioners choose for ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
