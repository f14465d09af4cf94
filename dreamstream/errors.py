"""Failures a person causes and can fix, and how the CLI says them: one line, no traceback.

Raise :class:`UserError` with a message that names what is wrong and what to
do. The top-level handler in :mod:`dreamstream.cli` prints it (and the known
library errors :func:`user_message` recognises) as ``Error: <message>`` on
stderr and exits 1; ``--debug`` / ``DREAMSTREAM_DEBUG=1`` shows the traceback
instead. Anything else is a bug and keeps its traceback.

Kept light: no kafka, torch or pydantic imports at module level.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator


class UserError(Exception):
    """A failure a person can cause and fix; ``message`` says what is wrong and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BrokerUnreachable(UserError, RuntimeError):
    """No Kafka broker answers at the configured address (a RuntimeError too, as ``admin_client`` raised before)."""


class TopicMissing(UserError, RuntimeError):
    """A topic the command reads does not exist on the broker (a RuntimeError too, as raised before)."""


def broker_unreachable(broker: str | None) -> BrokerUnreachable:
    """The error for a broker that does not answer, with the one sentence every command uses."""
    where = broker or "the configured address"
    return BrokerUnreachable(
        f"no Kafka broker answers at {where}; start one with `dreamstream broker` "
        "or point --broker / DREAMSTREAM_BROKER at your cluster"
    )


def _kafka_unreachable_types() -> tuple[type[BaseException], ...]:
    """kafka-python's and aiokafka's "cannot reach the broker" errors, of the clients this process imported."""
    names = (("kafka.errors", "NoBrokersAvailable"),  # kafka-python 2; 3 raises KafkaTimeoutError("Unable to bootstrap")
             ("kafka.errors", "KafkaTimeoutError"),
             ("aiokafka.errors", "KafkaConnectionError"))
    return tuple(t for t in (getattr(sys.modules.get(m), n, None) for m, n in names) if isinstance(t, type))


def is_broker_unreachable(err: BaseException) -> bool:
    """Is ``err`` a Kafka client's "no broker answers" (kafka-python's NoBrokersAvailable / KafkaTimeoutError, aiokafka's KafkaConnectionError)?"""
    unreachable = _kafka_unreachable_types()
    return bool(unreachable) and isinstance(err, unreachable)


# kafka-python's loggers that report every failed connection attempt while a client first bootstraps
_BOOTSTRAP_LOGGERS = ("kafka.net.manager", "kafka.net.connection", "kafka.net.selector",  # kafka-python 3
                      "kafka.conn", "kafka.client_async")  # kafka-python 2


def debugging() -> bool:
    """``--debug`` / ``DREAMSTREAM_DEBUG=1``: show tracebacks and the Kafka clients' connection chatter."""
    return os.environ.get("DREAMSTREAM_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def broker_bootstrap(broker: str) -> Iterator[None]:
    """Around a kafka-python client's first connection: "no broker answers" becomes :class:`BrokerUnreachable`.

    While it waits, the client's per-attempt log lines (dozens of
    ECONNREFUSED a second) are held back, so the one sentence that says what
    to do is what a person reads; ``--debug`` lets them through.
    """
    muted = [] if debugging() else [logging.getLogger(name) for name in _BOOTSTRAP_LOGGERS]
    levels = [logger.level for logger in muted]
    for logger in muted:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    except Exception as err:
        if not is_broker_unreachable(err):
            raise
        raise broker_unreachable(broker) from err
    finally:
        for logger, level in zip(muted, levels):
            logger.setLevel(level)


def user_message(err: BaseException, broker: str | None = None) -> str | None:
    """The one line to print for ``err`` when a person can fix it, else None (a bug: keep the traceback).

    ``broker`` is the address the command was given, for the library errors
    that do not say which broker they could not reach.
    """
    if isinstance(err, UserError):
        return err.message
    if is_broker_unreachable(err):
        return broker_unreachable(broker).message
    if isinstance(err, FileNotFoundError):
        name = err.filename or str(err)
        return f"{name}: no such file or folder; check the path (and that the step that writes it has run)"
    known = _named_user_errors()
    if isinstance(err, known):
        return " ".join(str(err).split()) or type(err).__name__
    return None


def _named_user_errors() -> tuple[type[BaseException], ...]:
    """The project's own error types whose message already says what is wrong and what to do."""
    found: list[type[BaseException]] = []
    for module, name in (("dreamstream.bundle", "BundleError"), ("dreamstream.data.recbole", "DatasetError"),
                         ("dreamstream.client", "IndexNotReadyError"), ("dreamstream.index.manifest", "IndexCorruptError"),
                         ("dreamstream.topics", "PartitionCountMismatch"), ("dreamstream.broker", "BrokerError")):
        loaded = sys.modules.get(module)  # only modules the command imported can have raised it
        if loaded is not None and isinstance(getattr(loaded, name, None), type):
            found.append(getattr(loaded, name))
    return tuple(found)
