"""The exit guard: a thread Faust leaves behind delays a stopped worker's exit by the grace period, never forever."""
from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from streams.ops.shutdown import exit_code, exit_despite_threads, lingering


@pytest.fixture
def stuck():
    """A non-daemon thread that waits until the test lets it go (Faust's consumer thread on a closed loop)."""
    release = threading.Event()
    thread = threading.Thread(target=release.wait, name="stuck-consumer", daemon=False)
    thread.start()
    yield thread
    release.set()
    thread.join(5)


def test_a_thread_that_does_not_end_is_named_and_the_process_exits_with_faust_s_code(stuck, caplog) -> None:
    exits: list[int] = []
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="streams.ops.shutdown"):
        exit_despite_threads(3, grace_s=0.3, exit=exits.append)
    assert exits == [3]
    assert 0.3 <= time.monotonic() - started < 3, "waits the grace period, then no longer"
    message = caplog.text
    assert "stuck-consumer" in message and "DREAMSTREAM_SHUTDOWN_GRACE_S" in message
    assert ", in wait" in message, "the log shows where the thread stood (its innermost frames)"


def test_threads_that_end_within_the_grace_period_leave_the_normal_exit_alone() -> None:
    slow = threading.Thread(target=time.sleep, args=(0.2,), name="slow-but-ending", daemon=False)
    slow.start()
    exits: list[int] = []
    exit_despite_threads(0, grace_s=5.0, exit=exits.append)
    assert exits == [] and not slow.is_alive()


def test_daemon_threads_and_the_caller_do_not_count() -> None:
    idle = threading.Event()
    daemon = threading.Thread(target=idle.wait, daemon=True)
    daemon.start()
    try:
        assert daemon not in lingering() and threading.current_thread() not in lingering()
        exits: list[int] = []
        exit_despite_threads(0, grace_s=0.1, exit=exits.append)
        assert exits == []
    finally:
        idle.set()


@pytest.mark.parametrize(("code", "want"), [(None, 0), (0, 0), (2, 2), ("a message", 1)])
def test_exit_code_follows_python_s_rules_for_system_exit(code: object, want: int) -> None:
    assert exit_code(code) == want


def test_a_real_process_with_a_stuck_thread_ends_with_the_code() -> None:
    """Without the guard this child would never end: Python's exit joins every non-daemon thread."""
    child = textwrap.dedent("""
        import logging, threading
        from streams.ops.shutdown import exit_despite_threads
        logging.basicConfig()
        threading.Thread(target=threading.Event().wait, name="never-ends").start()
        exit_despite_threads(7, grace_s=0.5)
        raise SystemExit("not reached: the guard exits the process")
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=30)
    assert done.returncode == 7, done.stderr
    assert "never-ends" in done.stderr
