"""PID files that name a process, not just a number: checked against the running process before any signal.

A PID file outlives its process (a crash, a reboot), and PIDs are reused:
after a reboot ``worker.pid`` may hold the number of an unrelated process,
which a plain ``os.kill(int(read()))`` would then terminate. So the file
records the process's command line and its start time (Linux: field 22 of
``/proc/<pid>/stat``, clock ticks since boot), and :func:`owned_pid` returns
the PID only while a live process with that PID still has both. Where the
start time cannot be read the command line alone must match; where neither
can be read (no ``/proc``) the process is not ours to signal.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from dreamstream.index.atomic_file import replace_atomically

log = logging.getLogger(__name__)


def command_line(pid: int) -> list[str] | None:
    """The argv of a running process (``/proc/<pid>/cmdline``), None when it is gone or unreadable."""
    try:
        raw = Path(f"/proc/{int(pid)}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part] or None


def start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot, ``/proc/<pid>/stat`` field 22); None when unknown."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text("utf-8", "replace")
        return int(stat.rsplit(")", 1)[1].split()[19])  # after "pid (comm)": state is field 3, starttime field 22
    except (OSError, ValueError, IndexError):
        return None


def write_pid_file(path: Path, pid: int, wait_s: float = 2.0) -> None:
    """Record ``pid`` with its command line and start time (read now, while it is surely ours).

    Linux quirk: ``Popen`` returns once the child's exec has closed its
    close-on-exec pipe, a moment before the kernel sets the new program's
    arguments, so ``/proc/<pid>/cmdline`` can still read empty; it is polled
    for up to ``wait_s``.
    """
    deadline = time.monotonic() + wait_s
    argv = command_line(pid)
    while argv is None and time.monotonic() < deadline and start_time(pid) is not None:
        time.sleep(0.01)
        argv = command_line(pid)
    record = {"pid": int(pid), "argv": argv, "start": start_time(pid)}
    replace_atomically(Path(path), json.dumps(record).encode("utf-8"))


def owned_pid(path: Path, legacy_command: str = "") -> int | None:
    """The PID in ``path`` if that process is still the one recorded there, else None (a stale or foreign file).

    A file of the older plain-number format has no record to compare: its
    process must be ``dreamstream <legacy_command>`` (an argv with a
    ``dreamstream`` program and that last argument), else it is not ours.
    """
    try:
        record = json.loads(Path(path).read_text("utf-8"))
        if isinstance(record, int) and not isinstance(record, bool):  # the older format: the number alone
            record = {"pid": record, "argv": None, "start": None}
        pid, argv, started = int(record["pid"]), record.get("argv"), record.get("start")
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if pid <= 0:
        return None
    running = command_line(pid)
    if running is None:
        return None
    if argv is None:  # the older format, or a command line that could not be read when the file was written
        ours = bool(legacy_command) and running[-1] == legacy_command and any(Path(a).name == "dreamstream" for a in running)
    else:
        ours = running == list(argv)
    ours = ours and (started is None or start_time(pid) == started)
    if not ours:
        log.warning("%s names pid %d, now %r, not the process it recorded (a stale file); not signalling it", path, pid,
                    " ".join(running)[:200])
        return None
    return pid
