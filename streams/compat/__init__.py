"""Every patch of a library's private API and every repair for the development broker, in one place.

Nothing outside this package touches a private attribute of Faust or
aiokafka, so upgrading either starts here. Each module declares what it is
for with :func:`shim` at import time: the library (or broker) it works
around, the versions it was written and tested against, and when it can
go. An installed version outside that range is logged as a warning at
start (``dreamstream worker`` keeps running: the pins in ``pyproject.toml``
are the hard guard; the warning says which shim to re-check first).

Library shims (always on, they fix the library whatever the broker):

* :mod:`.hold_back` - Faust: assign a topic's partitions without fetching them.
* :mod:`.fetch_wait` - Faust: its consumer's ``fetch_max_wait_ms`` is not a setting.
* :mod:`.fetch_cancel` - aiokafka: a consumer stopped while the broker is away raises ``CancelledError``.
* :mod:`.faust_tables` - Faust: table writes outside a stream event, its recovery buffers, its producer.
* :mod:`.aiokafka_metadata` - aiokafka: waiting for a topic's metadata.
* :mod:`.faust_web` - Faust: its router and table pages off, also on versions without the settings for it.
* :mod:`.table_start` - Faust: its table manager naps 1 s at every start before the group join can begin.

Development-broker repairs (on only when ``DREAMSTREAM_BROKER_KIND`` is
``tansu``; ``auto`` means tansu for a broker on a loopback address):

* :mod:`.tansu_rows` - tansu answers end offsets one batch short: complete the user rows after recovery, and
  Faust's recovery consistency check is switched off.
* :mod:`.tansu_leave` - tansu's first generation is 0, for which aiokafka sends no LeaveGroup: a stopped
  worker stayed in its group until its session timed out.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import metadata

log = logging.getLogger("streams.compat")


@dataclass(frozen=True)
class Shim:
    """What one compatibility module works around, for which versions, and when it can be removed."""

    module: str
    library: str          # a distribution name ("faust-streaming", "aiokafka") or "tansu" for a broker repair
    tested: tuple[str, str]  # [lowest, below) versions it was written and tested against
    remove_when: str

    def installed(self) -> str | None:
        if self.library == "tansu":
            return None
        try:
            return metadata.version(self.library)
        except metadata.PackageNotFoundError:
            return None

    def in_range(self) -> bool:
        """Is the installed library inside the tested range? (A broker repair has no installed version: True.)"""
        version = self.installed()
        if version is None:
            return True
        return _key(self.tested[0]) <= _key(version) < _key(self.tested[1])


SHIMS: list[Shim] = []


def shim(module: str, library: str, tested: tuple[str, str], remove_when: str) -> Shim:
    """Declare a compatibility module (called at its import); returns its record."""
    record = Shim(module, library, tested, remove_when)
    SHIMS.append(record)
    return record


def check_versions() -> list[Shim]:
    """Warn about every shim whose library is installed outside its tested range; returns those shims."""
    out = [s for s in SHIMS if not s.in_range()]
    for s in out:
        log.warning("%s %s is outside the range %s..%s that %s was tested with; re-check it (%s)", s.library,
                    s.installed(), *s.tested, s.module, s.remove_when)
    return out


def _key(version: str) -> tuple[int, ...]:
    """A release version's numeric parts ("0.14.0" -> (0, 14, 0)); enough for the ranges above."""
    parts = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit()) if not piece.isdigit() else piece
        if not digits:
            break
        parts.append(int(digits))
        if not piece.isdigit():
            break
    return tuple(parts)
