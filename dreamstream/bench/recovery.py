"""Recovery time: how long a worker takes from start to serving when it must rebuild many users' state.

Why measured: after a crash, a rescheduled pod or a rebalance, a worker
serves nothing for a partition until that partition's user-state rows are
back in its table. The number that matters is "process start (or kill of
the previous owner) until a new event of every partition comes out".

The run: a worker applies one event per user for ``users`` users (so the
changelog holds at least one row per user), is stopped cleanly, and then
each scenario starts worker(s) on the same topics and times, from launch,
until a probe event sent to every partition has its record on
user-embeddings (state rebuilt, probe applied on top: the probe's record
has ``seq`` 2):

* ``memory``: a fresh worker with the memory store replays the changelog.
* ``rocksdb-cold``: RocksDB store in an empty state folder (a new host).
* ``rocksdb-warm``: RocksDB store in the folder of the worker that wrote the
  state (a restarted pod with its volume): only the changelog tail is read.
* ``standby``: two workers with ``standby_replicas=1``, each on a RocksDB
  store holding the state written (standbys that have been running); the
  active one is SIGKILLed; timed from the kill to every partition served.
* ``rollout``: a worker of a new model namespace (``dreamstream rollout``)
  rebuilds every user's state from the retained watch-events log, from the
  earliest record; timed from launch until the probes, sent after all the
  history, have their records on the namespace's user-embeddings.
"""
from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from dreamstream.bench import harness as h
from dreamstream.client import user_partition
from dreamstream.settings import Settings
from dreamstream.topics import USER_EMBEDDINGS, WATCH_EVENTS, create_topics

SCENARIOS = ("memory", "rocksdb-cold", "rocksdb-warm", "standby", "rollout")


@dataclass
class Timing:
    scenario: str
    seconds: float  # launch (or kill) -> every partition's probe served
    served: bool
    log: Path


def probe_users(partitions: int, prefix: str = "probe") -> dict[int, str]:
    """One fresh user id per partition (murmur2 of the key, as producers place it)."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < partitions:
        user = f"{prefix}{i}"
        found.setdefault(user_partition(user, partitions), user)
        i += 1
    return found


def _probe(settings: Settings, users: list[str], item: str, seq_base: int) -> None:
    """Two events per probe user: the state must be served before the probe counts as done."""
    ts = int(time.time() * 1000)
    events = [{"user": u, "video": item, "ts": ts + k, "watch_ms": 9_000, "duration_ms": 10_000}
              for k in range(seq_base) for u in users]
    h.produce_sync(settings, settings.topic(WATCH_EVENTS), h.event_messages(events))


def _time_to_serving(settings: Settings, expected: dict[str, int], t0: float, timeout_s: float,
                     start: dict[int, int] | None = None) -> tuple[float, bool]:
    """Seconds from ``t0`` until every expected user's record was read; ``start``: user-embeddings offsets to read from.

    Why ``start``: read from offset 0, the reader first went through every
    user's old record; at 1M users that took it ~60 s, and the probes'
    records, written ~20 s after launch, were *read* 74 s after it.
    """
    col = h.read_records(settings, expected, timeout_s=timeout_s, start=start)
    firsts = []
    for user, n in expected.items():
        arrivals = [t for seq, t in col.arrivals.get(user, []) if seq >= n]
        if not arrivals:
            return time.time() - t0, False
        firsts.append(min(arrivals))
    return max(firsts) - t0, True


def build_state(settings: Settings, users: int, items: list[str], work: Path, progress: Callable[[str], None]) -> float:
    """One event per user through a real worker (RocksDB store in ``work/state-writer``); returns its seconds."""
    events = h.synthetic_events(users, users, items, seed=21)
    for i, e in enumerate(events):
        e["user"] = f"u{i}"  # exactly one event for each of the users
    h.produce_sync(settings, settings.topic(WATCH_EVENTS), h.event_messages(events))
    s = settings.model_copy(update={"store": "rocksdb://", "state_dir": work / "state-writer"})
    t0 = time.time()
    w = h.WorkerProcess(s, work / "writer.log").start()
    try:
        # every user's record, not a sample: stopped at a sample, the writer left 8,267 of 1M events to the next worker
        col = asyncio.run(h.read_until(s, s.topic(USER_EMBEDDINGS), lambda c: len(c.latest) >= users,
                                       600 + users / 200, decode=h.slim_record))
        if len(col.latest) < users:
            raise RuntimeError(f"the state-writing worker published {len(col.latest)} of {users} users' records; "
                               f"see {work / 'writer.log'}")
        progress(f"state of {users} users written in {time.time() - t0:.1f}s; stopping the writer")
    finally:
        code = w.stop(60)
    if code != 0:
        raise RuntimeError(f"the state-writing worker exited with {code}; see {work / 'writer.log'}")
    return time.time() - t0


def run_scenario(name: str, settings: Settings, work: Path, item: str, round_no: int, timeout_s: float) -> Timing:
    """One scenario on the shared topics; probes are new users so their seq tells the probe apart."""
    probes = list(probe_users(settings.partitions, prefix=f"probe{round_no}-").values())
    expected = {u: 2 for u in probes}
    log = work / f"{name}.log"
    if name == "standby":
        # RocksDB stores that already hold every row, as the two workers' volumes would after running a while: a
        # memory-store standby first replays the whole changelog (at 1M users it was still replaying 3.5 min after
        # its start, and a kill then timed that replay, not a takeover)
        s = settings.model_copy(update={"store": "rocksdb://", "standby_replicas": 1})
        for replica in ("standby-a", "standby-b"):
            shutil.copytree(work / "state-writer", work / replica, dirs_exist_ok=True)
        a = h.WorkerProcess(s.model_copy(update={"state_dir": work / "standby-a"}), work / "standby-a.log").start()
        b = h.WorkerProcess(s.model_copy(update={"state_dir": work / "standby-b"}), log).start()
        try:
            warm = list(probe_users(settings.partitions, prefix=f"warm{round_no}-").values())
            _probe(settings, warm, item, 2)
            _, ok = _time_to_serving(settings, {u: 2 for u in warm}, time.time(), timeout_s,
                                     h.end_offsets(settings, settings.topic(USER_EMBEDDINGS)))
            if not ok:
                return Timing(name, float("nan"), False, log)
            time.sleep(3)  # standbys catch up with the changelog tail
            start = h.end_offsets(settings, settings.topic(USER_EMBEDDINGS))
            t0 = time.time()
            a.kill()
            _probe(settings, probes, item, 2)
            seconds, ok = _time_to_serving(settings, expected, t0, timeout_s, start)
            return Timing(name, seconds, ok, log)
        finally:
            a.stop()
            b.stop()
    if name == "rollout":
        return _rollout(settings, work, item, round_no, probes, timeout_s)
    update: dict[str, Any] = {"memory": {"store": "memory://", "state_dir": work / "state-memory"},
                              "rocksdb-cold": {"store": "rocksdb://", "state_dir": work / f"state-cold-{round_no}"},
                              "rocksdb-warm": {"store": "rocksdb://", "state_dir": work / "state-writer"}}[name]
    s = settings.model_copy(update=update)
    _probe(settings, probes, item, 2)  # already waiting when the worker starts
    start = h.end_offsets(settings, settings.topic(USER_EMBEDDINGS))
    t0 = time.time()
    w = h.WorkerProcess(s, log).start()
    try:
        seconds, ok = _time_to_serving(settings, expected, t0, timeout_s, start)
        return Timing(name, seconds, ok, log)
    finally:
        w.stop(60)


def _rollout(settings: Settings, work: Path, item: str, round_no: int, probes: list[str], timeout_s: float) -> Timing:
    """A new namespace's worker rebuilding every user from the log (its items published first, as `rollout start` does)."""
    from dreamstream.bundle import latest_version, load_bundle

    ns = settings.in_namespace(f"bench-rollout-{round_no}").model_copy(
        update={"store": "memory://", "state_dir": work / f"state-rollout-{round_no}"})
    create_topics(ns)
    bundle = load_bundle(latest_version(settings.model_dir))
    h.publish_items(ns, bundle.item_ids, bundle.items, model=bundle.version)
    _probe(settings, probes, item, 2)  # after every user's history: served once all of it is applied
    log = work / "rollout.log"
    start = h.end_offsets(ns, ns.topic(USER_EMBEDDINGS))
    t0 = time.time()
    w = h.WorkerProcess(ns, log).start()
    try:
        seconds, ok = _time_to_serving(ns, {u: 2 for u in probes}, t0, timeout_s, start)
        return Timing("rollout", seconds, ok, log)
    finally:
        w.stop(60)


def measure(settings: Settings, users: int, scenarios: tuple[str, ...] = SCENARIOS, work: Path | None = None,
            progress: Callable[[str], None] = print, timeout_s: float = 600) -> dict[str, Any]:
    """Build the state of ``users`` users, then time each scenario; returns the numbers."""
    from dreamstream.bundle import latest_version, load_bundle

    import tempfile

    work = work or Path(tempfile.mkdtemp(prefix="dreamstream-recovery-"))
    bundle = load_bundle(latest_version(settings.model_dir))
    settings = settings.model_copy(update={"topic_prefix": settings.topic_prefix or f"recovery{uuid.uuid4().hex[:6]}.",
                                           "web_port": 0, "cold_min_positive": 0})
    create_topics(settings)
    h.publish_items(settings, bundle.item_ids, bundle.items, model=bundle.version)
    write_s = build_state(settings, users, list(bundle.item_ids), work, progress)
    out: dict[str, Any] = {"users": users, "partitions": settings.partitions, "write_seconds": write_s, "work": str(work)}
    for i, name in enumerate(scenarios):
        t = run_scenario(name, settings, work, bundle.item_ids[0], i, timeout_s)
        out[name] = round(t.seconds, 2) if t.served else None
        progress(f"{name}: {'%.2f s' % t.seconds if t.served else 'NOT served within the timeout'} "
                 f"(start to every partition served; log {t.log})")
    return out
