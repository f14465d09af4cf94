"""Issue 27, finding 9: concurrent writers of the shared index files neither tear nor lose a write.

On main the atomic writer named its temp file after the PID (every
container process is PID 1, and threads of one process share it) and
``SERVING``/``HISTORY.json`` were read-modified-written without a lock: two
writers tore or lost 215 of 600 writes. Writers here are separate processes
(the lost-update cases) and threads of one process (one PID: the temp-file
collision a fleet of PID-1 containers has).
"""
from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path

import pytest

from dreamstream.index.atomic_file import replace_atomically
from dreamstream.index.publish import read_history, record_published
from dreamstream.monitor import MonitorStat, read_monitor, write_monitor
from dreamstream.serving import read_serving, switch_serving

WRITERS, WRITES = 4, 40


def _publish_many(index_dir: str, writer: int) -> None:
    for n in range(WRITES):
        record_published(Path(index_dir), f"w{writer}-{n}")


def _switch_many(index_dir: str, writer: int, log_path: str) -> None:
    with open(log_path, "a") as log:
        for n in range(WRITES):
            new = switch_serving(Path(index_dir), f"w{writer}-{n}")
            log.write(json.dumps(new.__dict__) + "\n")


def _run(target, *args_per_writer) -> None:
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no locks or threads inherited
    procs = [context.Process(target=target, args=args) for args in args_per_writer]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0


def test_concurrent_publishers_lose_no_history_entry(tmp_path: Path) -> None:
    _run(_publish_many, *[(str(tmp_path), w) for w in range(WRITERS)])
    versions = [h["version"] for h in read_history(tmp_path)]
    assert sorted(versions) == sorted(f"w{w}-{n}" for w in range(WRITERS) for n in range(WRITES))


def test_concurrent_switches_form_one_chain(tmp_path: Path) -> None:
    """Under the lock each switch reads the pointer the previous switch wrote: its ``previous`` is that one's namespace."""
    logs = [tmp_path / f"log{w}" for w in range(WRITERS)]
    index_dir = tmp_path / "index"
    index_dir.mkdir()
    _run(_switch_many, *[(str(index_dir), w, str(logs[w])) for w in range(WRITERS)])
    writes = sorted((json.loads(line) for log in logs for line in log.read_text().splitlines()), key=lambda s: s["since"])
    assert len(writes) == WRITERS * WRITES
    assert writes[0]["previous"] == ""
    lost = [b for a, b in zip(writes, writes[1:]) if b["previous"] != a["namespace"]]
    assert not lost, f"{len(lost)} switches overwrote one they never saw, e.g. {lost[0]}"
    assert read_serving(index_dir).namespace == writes[-1]["namespace"]


@pytest.mark.parametrize("target", ["SERVING", "MONITOR.json"])
def test_writers_sharing_a_pid_never_tear_a_file(tmp_path: Path, target: str) -> None:
    """Threads of one process share its PID, like PID-1 containers sharing a volume; readers never see half a file."""
    stop = threading.Event()
    errors: list[str] = []
    reads = [0]

    def write(writer: int) -> None:
        for n in range(150):
            if target == "SERVING":
                body = {"namespace": f"w{writer}-{n}" + "x" * 2000, "previous": None, "since": float(n)}
                payload = json.dumps(body).encode()
            else:
                payload = json.dumps({f"ns{writer}": {"events": n, "hits": 0, "hitrate": None, "window": n,
                                                      "updated_at": 1.0, "pad": "y" * 4000}}).encode()
            try:
                replace_atomically(tmp_path / target, payload)
            except OSError as err:
                errors.append(f"write: {err!r}")

    def read() -> None:
        while not stop.is_set():
            try:
                data = json.loads((tmp_path / target).read_bytes())
                reads[0] += 1
                assert isinstance(data, dict) and len(data) in (1, 3)
            except FileNotFoundError:
                continue
            except (ValueError, AssertionError) as err:
                errors.append(f"read: {err!r}")

    replace_atomically(tmp_path / target, json.dumps({"namespace": "", "previous": None, "since": 0.0}).encode())
    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    reader.join()
    assert not errors, f"{len(errors)} torn or failed: {errors[:3]}"
    assert reads[0] > 0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "temp files left behind"
    if target == "MONITOR.json":
        write_monitor(tmp_path, {"": MonitorStat(1, 1, 1.0, 1, 1.0)})
        assert read_monitor(tmp_path)[""].events == 1


def test_a_writer_killed_mid_write_leaves_only_a_temp_file_that_prune_removes(tmp_path: Path) -> None:
    import os
    import time

    from dreamstream.index.publish import prune

    replace_atomically(tmp_path / "SERVING", b'{"namespace": ""}')
    orphan = tmp_path / ".SERVING.k1lled.tmp"  # what a writer killed between write and rename leaves
    orphan.write_bytes(b'{"namesp')
    assert read_serving(tmp_path).namespace == ""
    assert prune(tmp_path, grace_s=60) == [] and orphan.exists()  # young: maybe a live writer's
    old = time.time() - 120
    os.utime(orphan, (old, old))
    assert prune(tmp_path, grace_s=60) == [orphan.name] and not orphan.exists()
    assert (tmp_path / "SERVING").exists()
