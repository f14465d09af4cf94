"""Run a Faust worker to the end, and make sure the process ends with it.

Faust's consumer runs in a non-daemon thread (mode's ``WorkerThread``) with
an event loop of its own. When anything breaks off Faust's stop half done,
that thread outlives the main loop: Faust logs "Closing event loop", the
thread's keepalive finds the main loop closed, and the thread waits
forever. Python's exit waits for every non-daemon thread, so the process
never ends and the orchestrator has to SIGKILL it. CI saw exactly that
(exit -9 in the join/SIGKILL/join/SIGTERM rebalance test): the worker's
shutdown flush failed inside Faust's stop. That cause is fixed
(``Worker.shut_down`` in ``streams/agents.py``); this is the backstop for
the next one.

By the time Faust's loop is closed the worker's release has run (rows
flushed and offsets committed, or dropped for the next owner to replay),
so nothing is lost by not waiting: after a grace period the process logs
which threads were left and where they stood, and exits with the code
Faust chose.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from typing import Any, Callable

from dreamstream.logs import flush_logs

log = logging.getLogger("streams.ops.shutdown")


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


def lingering() -> list[threading.Thread]:
    """The threads Python's exit would wait for: alive, not daemon, not the one asking."""
    me = threading.current_thread()
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
                "(DREAMSTREAM_SHUTDOWN_GRACE_S); the worker's release had run before:\n%s",
                code, len(stuck), grace_s, "\n".join(where(t) for t in stuck))
    flush_logs()
    exit(code)


def where(thread: threading.Thread) -> str:
    """A thread's name and the innermost frames of its stack, for the exit's log line."""
    frame = sys._current_frames().get(thread.ident or -1)
    stack = "".join(traceback.format_stack(frame, limit=6)) if frame is not None else "  (no frame)\n"
    return f"thread {thread.name!r}:\n{stack}"
