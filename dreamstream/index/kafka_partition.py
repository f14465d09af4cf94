"""The partition of a key as Kafka's default partitioner places it (murmur2, positive, modulo).

Every producer of a keyed topic must agree on it: compaction keeps one value
per key *per partition*, and readers that look a key up (``retrieve``) scan
only the partition this function names.
"""
from __future__ import annotations

from kafka.partitioner.default import murmur2


def kafka_partition(key: bytes, partitions: int) -> int:
    """The partition Java's and kafka-python's default partitioners choose for ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
