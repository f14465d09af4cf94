"""Run a Faust worker to the end, and make sure the process ends with it.

Faust's consumer runs in a non-daemon thread (mode's ``WorkerThread``) with
an event loop of its own. When SIGTERM lands while a rebalance is being
torn down, that thread can outlive the main loop: Faust logs "Closing event
loop", then the thread's keepalive finds the main loop closed and the thread
waits forever. Python's exit waits for every non-daemon thread, so the
process never ends and the orchestrator has to SIGKILL it (CI saw exit -9
in the join/SIGKILL/join/SIGTERM rebalance test).

By then the worker's own shutdown has already run (``on_before_shutdown``
releases the partitions: rows flushed, offsets committed), and a replayed
event is skipped anyway, so nothing is lost by not waiting: after a grace
period the process logs which threads were left and where they stood, and
exits with the code Faust chose.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from typing import Any, Callable

log = logging.getLogger("streams.shutdown")


def run_worker(app: Any, log_level: str, grace_s: float) -> None:
    """Faust's worker for ``app`` until SIGTERM/SIGINT; the process ends within ``grace_s`` of Faust's end."""
    from faust.worker import Worker

    try:
        Worker(app, loglevel=log_level, quiet=True, redirect_stdouts=False).execute_from_commandline()
    except SystemExit as done:
        exit_despite_threads(exit_code(done.code), grace_s)
        raise


def exit_code(code: object) -> int:
    """``SystemExit.code`` as the number the process would exit with (None is 0, a message is 1)."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def lingering(me: threading.Thread | None = None) -> list[threading.Thread]:
    """The threads Python's exit would wait for: alive, not daemon, not the one asking."""
    me = me or threading.current_thread()
    return [t for t in threading.enumerate() if t is not me and not t.daemon and t.is_alive()]


def exit_despite_threads(code: int, grace_s: float, exit: Callable[[int], None] = os._exit) -> None:
    """Give lingering threads ``grace_s`` to end; if some do not, say which and where, then ``exit(code)``.

    Returns (and lets the normal exit run) when no thread is left.
    """
    deadline = time.monotonic() + grace_s
    for thread in lingering():
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = lingering()
    if not stuck:
        return
    log.warning("exiting with code %d although %d thread(s) did not end within %.1fs of the worker's shutdown "
                "(DREAMSTREAM_SHUTDOWN_GRACE_S); the partitions were already released:\n%s",
                code, len(stuck), grace_s, "\n".join(where(t) for t in stuck))
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    exit(code)


def where(thread: threading.Thread) -> str:
    """A thread's name and the innermost frames of its stack, for the exit's log line."""
    frame = sys._current_frames().get(thread.ident or -1)
    stack = "".join(traceback.format_stack(frame, limit=6)) if frame is not None else "  (no frame)\n"
    return f"thread {thread.name!r}:\n{stack}"
