"""Structured (key=value) logging shared by every long-running dreamstream process."""
from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "info") -> None:
    """One line per record, machine-parsable, time first."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        stream=sys.stderr,
        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s",
        force=True,
    )
