"""Secrets never reach a log handler: every log record is redacted as it is made, whoever logs it, at any level.

Why at the record factory and not a filter per handler: the processes'
handlers are not all ours (Faust and mode install their own when a worker
starts, libraries may add more), and a filter on a logger does not see the
records its children propagate. The factory makes every record of the
process, so a record holding a secret is cleaned before any handler or
filter sees it. Two kinds of secret are removed:

* every value :func:`register` was given: the passwords and tokens
  ``dreamstream.kafka.security`` reads from their files, wherever they show
  up (kafka-python's admin client logs its whole configuration at debug
  level, SASL password included; a library's repr of its credentials);
* whatever follows a key that ends in ``password``, ``secret`` or
  ``token``, as ``key=value`` or ``'key': 'value'``: secrets not read here.

Records are only made for enabled levels, so the cost is one formatting
and two scans of the lines that are actually logged.
"""
from __future__ import annotations

import logging
import re
import threading
import traceback
from typing import Any

MASK = "***"
_SECRETS: set[str] = set()
_LOCK = threading.Lock()
_MIN_SECRET_CHARS = 4  # shorter values would mask ordinary words in every line
_NAMED = re.compile(r"""(?P<key>[\w.-]*(?:password|passwd|secret|token)['"]?\s*[:=]\s*)"""
                    r"""(?P<value>b?'[^']*'|b?"[^"]*"|[^\s,;}\]'"]+)""", re.IGNORECASE)
_installed = False


def register(secret: str | None) -> None:
    """Redact ``secret`` from every log record from now on (and install the redaction if it is not yet)."""
    if secret and len(secret) >= _MIN_SECRET_CHARS:
        with _LOCK:
            _SECRETS.add(secret)
    install()


def redact(text: str) -> str:
    """``text`` with every registered secret and every value of a secret-named key replaced by :data:`MASK`."""
    for secret in tuple(_SECRETS):
        if secret in text:
            text = text.replace(secret, MASK)
    if any(word in text.lower() for word in ("password", "passwd", "secret", "token")):
        text = _NAMED.sub(_mask_value, text)
    return text


def _mask_value(match: re.Match) -> str:
    value = match.group("value")
    if value in ("None", "null", "''", '""'):  # nothing to hide: keep it readable (an unset password says so)
        return match.group(0)
    return match.group("key") + MASK


def install() -> None:
    """Wrap the process's log record factory once (idempotent): every record made afterwards is redacted."""
    global _installed
    with _LOCK:
        if _installed:
            return
        _installed = True
        make = logging.getLogRecordFactory()

        def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            return _redacted(make(*args, **kwargs))

        logging.setLogRecordFactory(redacting_factory)


def _redacted(record: logging.LogRecord) -> logging.LogRecord:
    """The record with its message (arguments merged in), exception and stack text redacted."""
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: logging reports it at emit time as it always has
        return record
    # args (): merged into msg. Not None: mode's formatter (every Faust worker's handler) wraps None into (None,)
    # and then fails on every record ("not all arguments converted"), printing a stack instead of the line.
    record.msg, record.args = redact(message), ()
    if record.exc_info and record.exc_info[0] is not None:
        record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record
