"""Faust table and producer internals the worker needs: writes outside a stream event, recovery state, the producer.

The worker writes its user table from batches it read itself
(``streams.kafka.feed``), not from a Faust stream, so three things Faust
only does for an event in hand are done here, each the way Faust does it
inside:

* :func:`put_row` - a row into a known partition of the store (Faust's
  RocksDB store takes the partition from the current stream event, which a
  batch has not got: ``data[key] = value`` asserted, every batch crashed).
* :func:`recovered_through` / :func:`drop_buffered_rows` - how far Faust's
  changelog recovery applied a partition, and dropping rows it received
  but has not applied (they are older than what the table now holds).
* :func:`producer` - Faust's started aiokafka producer, which the worker
  hands whole record batches (``streams.kafka.batch_send``).
"""
from __future__ import annotations

from typing import Any

from faust.types import TP

from streams.compat import shim

SHIM = shim(__name__, "faust-streaming", ("0.11", "0.16"),
            "Faust tables accept writes with an explicit partition outside a stream event, and expose recovery "
            "progress and the started producer publicly")


def put_row(table: Any, key: bytes, value: bytes, partition: int) -> None:
    """``table.data[key] = value`` in a known partition (the memory store keeps no partitions)."""
    store = table.data
    if hasattr(store, "_db_for_partition"):
        store._key_index[key] = partition
        store._db_for_partition(partition).put(key, value)
    else:
        store[key] = value


def mark_persisted(table: Any, topic: str, partition: int, offset: int) -> None:
    """Tell the table's store the changelog holds rows up to ``offset`` (what Faust records after its own writes)."""
    table.data.set_persisted_offset(TP(topic, partition), offset)


def changelog_topic(table: Any) -> str:
    return table.changelog_topic.get_topic_name()


def recovered_through(app: Any, topic: str, partition: int) -> int:
    """The changelog offset up to which Faust's recovery surely applied this partition to the table.

    Not ``active_offsets``: that is the last offset Faust *received*, and
    rows received after it declared the recovery done (tansu reports the
    end one produce batch short) wait in its buffer unapplied. A whole
    flush of rows was missed that way and its users' events applied to
    older rows. The highwater Faust recovered to is applied for sure.
    """
    recovery = app.tables.recovery
    tp = TP(topic, partition)
    through = recovery.active_highwaters.get(tp)
    if through is None:
        through = recovery.active_offsets.get(tp)
    return max(0, int(through or 0))


def drop_buffered_rows(app: Any, table: Any, partitions: set[int]) -> None:
    """Drop rows of these partitions Faust received but has not applied: the table has them, or newer ones.

    Faust applies its recovery buffer when it fills or at the next
    rebalance, which would put those older rows over newer ones.
    """
    buffer = app.tables.recovery.buffers.get(table)
    if buffer:
        buffer[:] = [event for event in buffer if event.message.partition not in partitions]


def producer(app: Any) -> Any:
    """Faust's aiokafka producer, started if it is not yet."""
    return app.producer._ensure_producer()
