"""Structured (key=value) logging shared by every long-running dreamstream process."""
from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "info") -> None:
    """One line per record, machine-parsable, time first; secrets redacted (``dreamstream.kafka.redaction``)."""
    from dreamstream.kafka.redaction import install

    install()
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        stream=sys.stderr,
        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s",
        force=True,
    )


def flush_logs() -> None:
    """Write out what the root logger's handlers hold: a process about to ``os._exit`` skips Python's own flush."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
