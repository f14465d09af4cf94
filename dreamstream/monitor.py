"""Live recommendation quality per model namespace: the pure scoring core, the status file and the rollout gate.

Why: a rollout (``dreamstream rollout``) runs a new model namespace beside
the serving one. Offline numbers say whether the new model *should* be
better; this says whether it *is*, on the traffic both are serving right now.
``dreamstream monitor`` (:mod:`dreamstream.monitor_service`) feeds live
``watch-events`` and each namespace's ``user-embeddings.<ns>`` into
:class:`Monitor`; it writes :data:`STATUS` (``<index dir>/MONITOR.json``),
which ``rollout status`` and ``rollout switch --gate`` read through
:func:`read_monitor` and :func:`gate`.

The protocol is the offline prequential one (:mod:`dreamstream.evaluation.prequential`)
run live: a sampled positive watch event is a *hit* for a namespace when its
video is among the top-``k`` candidates retrieved (as the ranking services
retrieve them: user vector plus interests, :func:`top_k`) for the user's
record in that namespace from *before* the event was applied.

Pairing "the record before the event". Both topics are read concurrently,
so the record the worker published *after* applying the event may already
be in hand when the event is read. A record's ``ts`` is the event time of
the last event the worker applied to it, so a record includes an event only
if its ``ts >= event.ts``; the monitor therefore pairs an event with the
newest record (by ``seq``) of the user whose ``ts < event.ts``. It keeps
the last :data:`KEEP` records per user (so a worker one batch ahead of the
monitor still leaves the pre-event record in hand) for at most ``max_users``
users per namespace (the least recently updated is forgotten first, so
memory is bounded by the setting, not the user base), and scores a sampled
event only ``delay_s`` after reading it, so a record the worker published
before the event but that is still in flight is waited for. Known limits:
a record also counts as "after" an event when a *later-applied* event of the
same user carries an equal or older timestamp (client clocks), and several
events of one user in one worker batch share one record (each is scored
against the record before the batch, which is what a ranking service
actually had).

Which events count. Impressions and quick skips (``watch_ms / duration_ms <
skip_ratio``) are not positives and are ignored. A sampled event with no
record from before it in a namespace (the user's first event there, or the
pre-event record already replaced before the monitor read the event) is not
scored there but counted as skipped with its reason: the model had no
personal state to serve from, which is the fallback's quality, not the
model's. The user's earlier videos are *not* masked (the offline protocol
masks them): the monitor knows only the traffic since it started, so a mask
would depend on its uptime; both namespaces get the same rule, so they
compare fairly, and a re-watch of a candidate counts as a hit.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from dreamstream.index.atomic_file import replace_atomically
from dreamstream.index.layout import MONITOR
from dreamstream.index.shared_file import IndexCorruptError, field_of, read_json, want

STATUS = MONITOR
KEEP = 2  # records kept per user and namespace: the latest, and the one before it
DEFAULT_MAX_USERS = 250_000  # users held per namespace (~4 KB each at D=64, K=4): ~1 GB, whatever the user base
DEFAULT_WINDOW = 5000
DEFAULT_MIN_EVENTS = 200
DEFAULT_MAX_AGE_S = 300.0

# A ranker returns the ids of the top-k candidates of a decoded user record in its namespace (raises ValueError for
# a record it cannot search, e.g. of another width; LookupError when the namespace has no index loaded).
Ranker = Callable[[str, Mapping[str, Any], int], Sequence[str]]


# --- which events are scored --------------------------------------------------------------------------------------
def sampled(user: str, offset: int, rate: float) -> bool:
    """Is the event of ``user`` at ``offset`` in the sample? Deterministic: a hash of both, not a random draw.

    Deterministic so two monitor replicas (or a rerun over the same offsets)
    score the same events, and a user's events are spread over the sample
    instead of a user being in or out for good.
    """
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(f"{user}\x00{offset}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") < rate * (1 << 64)


def is_positive(kind: str, watch_ms: float, duration_ms: float, skip_ratio: float) -> bool:
    """A watch (not an impression) that is not a quick skip: the event a recommendation should have predicted."""
    return kind != "impression" and duration_ms > 0 and watch_ms / duration_ms >= skip_ratio


def to_score(kind: str, watch_ms: float, duration_ms: float, user: str, offset: int, skip_ratio: float,
             rate: float) -> bool:
    """Is this event one the monitor scores: a positive watch, in the sample?"""
    return is_positive(kind, watch_ms, duration_ms, skip_ratio) and sampled(user, offset, rate)


@dataclass(frozen=True)
class WatchEvent:
    """What the core needs of a ``watch-events`` event (:class:`streams.domain.validate.Event` has these fields)."""

    user: str
    video: str
    ts: int
    offset: int = 0


@dataclass(frozen=True)
class HeldRecord:
    """A decoded ``user-embeddings`` value, with the fields the pairing reads pulled out."""

    user: str
    seq: int
    ts: int
    value: Mapping[str, Any]


def held_record(value: Any) -> HeldRecord:
    """Check a decoded record just enough to pair it; ``ValueError`` says what is wrong.

    The vectors are checked when the record is searched (a bad one is then
    skipped as ``bad-record``): most held records are never searched.
    """
    if not isinstance(value, dict):
        raise ValueError(f"a record must be a map, got {type(value).__name__}")
    user, seq, ts = value.get("user"), value.get("seq"), value.get("ts")
    if isinstance(user, bool) or not isinstance(user, (str, int)) or str(user) == "":
        raise ValueError("record has no user id")
    for name, number in (("seq", seq), ("ts", ts)):
        if isinstance(number, bool) or not isinstance(number, int):
            raise ValueError(f"record field '{name}' must be an int, got {type(number).__name__}")
    if not isinstance(value.get("vector"), (bytes, bytearray)):
        raise ValueError("record has no 'vector' bin")
    return HeldRecord(str(user), seq, ts, value)


# --- windowed counts ------------------------------------------------------------------------------------------------
@dataclass
class HitWindow:
    """Totals since start, and the hit rate over the last ``size`` scored events (the one a rollout is judged by)."""

    size: int = DEFAULT_WINDOW
    events: int = 0
    hits: int = 0
    recent: deque = field(default_factory=deque)
    recent_hits: int = 0

    def add(self, hit: bool) -> None:
        self.events += 1
        self.hits += hit
        self.recent.append(hit)
        self.recent_hits += hit
        if len(self.recent) > self.size:
            self.recent_hits -= self.recent.popleft()

    @property
    def hitrate(self) -> float:
        """Hits over the events in the window; NaN before the first one."""
        return self.recent_hits / len(self.recent) if self.recent else math.nan


@dataclass
class NamespaceStats:
    """One namespace's counts: scored events in a :class:`HitWindow`, skipped ones by reason."""

    window: HitWindow
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


# --- the pairing and scoring core -----------------------------------------------------------------------------------
@dataclass(eq=False)  # identity: two waits for equal events are still two
class Pending:
    """A sampled event waiting ``delay_s`` for in-flight records, with its best pre-event record per namespace."""

    event: WatchEvent
    due: float
    before: dict[str, HeldRecord | None]


@dataclass(frozen=True)
class Outcome:
    """One sampled event in one namespace: ``hit`` is None when it was skipped (then ``reason`` says why)."""

    namespace: str
    event: WatchEvent
    hit: bool | None
    reason: str = ""
    record_seq: int | None = None


class Monitor:
    """Pairs sampled events with each namespace's pre-event record and keeps the hit counts. No Kafka, no clock.

    Feed it in the order things are read: :meth:`on_record` for each
    ``user-embeddings.<ns>`` value, :meth:`on_event` for each sampled
    positive event, and :meth:`score_due` with the current time to score the
    events whose delay has passed (``now=math.inf`` scores them all).
    """

    def __init__(self, namespaces: Iterable[str], ranker: Ranker, k: int = 20, delay_s: float = 2.0,
                 window: int = DEFAULT_WINDOW, max_users: int = DEFAULT_MAX_USERS) -> None:
        self.namespaces = list(dict.fromkeys(namespaces))
        self.ranker, self.k, self.delay_s = ranker, k, delay_s
        self.max_users = max_users
        # per namespace, user -> their last KEEP records, least recently updated user first (evicted first)
        self.records: dict[str, OrderedDict[str, list[HeldRecord]]] = {ns: OrderedDict() for ns in self.namespaces}
        self.evicted = {ns: 0 for ns in self.namespaces}
        self.stats = {ns: NamespaceStats(HitWindow(window)) for ns in self.namespaces}
        self.pending: deque[Pending] = deque()
        self._pending_by_user: dict[str, list[Pending]] = {}

    def on_record(self, namespace: str, record: HeldRecord) -> None:
        """Hold the user's newest records; a record older than the event of a waiting event may be its better pair.

        At most ``max_users`` users are held per namespace: past that the
        user updated least recently is forgotten (an event of theirs is then
        skipped as ``no-record``), so memory is bounded by the setting, not
        by the user base (it kept every user forever: 10M users x 2
        namespaces was ~78 GiB).
        """
        users = self.records[namespace]
        kept = users.get(record.user)
        if kept is None:
            kept = users[record.user] = []
            while len(users) > self.max_users:
                users.popitem(last=False)
                self.evicted[namespace] += 1
        else:
            users.move_to_end(record.user)
        if any(r.seq >= record.seq for r in kept):
            return  # a re-sent or out-of-order older record: the newer one stays
        kept.append(record)
        kept.sort(key=lambda r: r.seq)
        del kept[:-KEEP]
        for waiting in self._pending_by_user.get(record.user, ()):
            best = waiting.before.get(namespace)
            if record.ts < waiting.event.ts and (best is None or record.seq > best.seq):
                waiting.before[namespace] = record

    def before(self, namespace: str, event: WatchEvent) -> HeldRecord | None:
        """The newest held record of the event's user that does not yet include the event (``ts < event.ts``)."""
        earlier = [r for r in self.records[namespace].get(event.user, ()) if r.ts < event.ts]
        return max(earlier, key=lambda r: r.seq) if earlier else None

    def on_event(self, event: WatchEvent, now: float) -> None:
        """Queue a sampled positive event, paired now with each namespace's pre-event record (may improve while it waits)."""
        waiting = Pending(event, now + self.delay_s, {ns: self.before(ns, event) for ns in self.namespaces})
        self.pending.append(waiting)
        self._pending_by_user.setdefault(event.user, []).append(waiting)

    def score_due(self, now: float) -> list[Outcome]:
        """Score every queued event whose delay has passed, in arrival order."""
        out: list[Outcome] = []
        while self.pending and self.pending[0].due <= now:
            waiting = self.pending.popleft()
            queue = self._pending_by_user[waiting.event.user]
            queue.remove(waiting)
            if not queue:
                del self._pending_by_user[waiting.event.user]
            out.extend(self._score(ns, waiting) for ns in self.namespaces)
        return out

    def _score(self, namespace: str, waiting: Pending) -> Outcome:
        event, record = waiting.event, waiting.before[namespace]
        stats = self.stats[namespace]
        if record is None:
            reason = "unpaired" if self.records[namespace].get(event.user) else "no-record"
            stats.skip(reason)
            return Outcome(namespace, event, None, reason)
        try:
            candidates = self.ranker(namespace, record.value, self.k)
        except LookupError:
            stats.skip("no-index")
            return Outcome(namespace, event, None, "no-index", record.seq)
        except ValueError:
            stats.skip("bad-record")
            return Outcome(namespace, event, None, "bad-record", record.seq)
        hit = event.video in set(map(str, candidates))
        stats.window.add(hit)
        return Outcome(namespace, event, hit, "", record.seq)


# --- the ranking the services use -----------------------------------------------------------------------------------
def top_k(version: Any, record: Mapping[str, Any], k: int) -> list[str]:
    """The ids a ranking service retrieves for ``record`` from a loaded index version (:func:`dreamstream.client.rank`).

    The monitor pairs record and version itself (not through a
    :class:`~dreamstream.client.Retriever`): a Retriever loads only the
    SERVING pointer's namespaces, and the monitor also scores a namespace
    that is still catching up.
    """
    from dreamstream.client import rank

    return [str(i) for i, _ in rank(version, record, k)]


# --- the status file and the gate -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class MonitorStat:
    """One namespace's line of MONITOR.json: totals, the window's hit rate and size, when it was written."""

    events: int
    hits: int
    hitrate: float | None  # over the last `window` scored events; None before the first
    window: int  # scored events the hit rate is over
    updated_at: float
    skipped: int = 0


def stats_of(monitor: Monitor, now: float) -> dict[str, MonitorStat]:
    """The monitor's counts as :class:`MonitorStat` per namespace."""
    out = {}
    for ns, stats in monitor.stats.items():
        rate = stats.window.hitrate
        out[ns] = MonitorStat(stats.window.events, stats.window.hits, None if math.isnan(rate) else rate,
                              len(stats.window.recent), now, sum(stats.skipped.values()))
    return out


def write_monitor(index_dir: Path, stats: Mapping[str, MonitorStat]) -> Path:
    """Write ``<index dir>/MONITOR.json`` atomically: a reader sees the previous status or this one, never half."""
    path = Path(index_dir) / STATUS
    Path(index_dir).mkdir(parents=True, exist_ok=True)
    replace_atomically(path, json.dumps({ns: asdict(s) for ns, s in stats.items()}, indent=1).encode("utf-8"))
    return path


def read_monitor(index_dir: Path) -> dict[str, MonitorStat]:
    """The last status the monitor wrote, per namespace (``{}`` when none); ``IndexCorruptError`` when it is not one.

    ``MONITOR.json``'s one parser: a map of namespace -> line, every line of
    the shape :func:`write_monitor` writes; any other shape is the file's
    corruption (a gate must not judge on half a status).
    """
    path = Path(index_dir) / STATUS
    data = read_json(path)
    if data is None:
        return {}
    where = str(path)
    out = {}
    for ns, line in want(data, dict, where).items():
        at = f"{where} namespace {ns!r:.60}"
        want(line, dict, at)
        rate = field_of(line, "hitrate", (int, float, type(None)), at, None)
        out[ns] = MonitorStat(field_of(line, "events", int, at), field_of(line, "hits", int, at),
                              None if rate is None else float(rate), field_of(line, "window", int, at),
                              float(field_of(line, "updated_at", (int, float), at)), field_of(line, "skipped", int, at, 0))
    return out


def _name(ns: str) -> str:
    return repr(ns) if ns else "the default namespace"


def _not_ready(stat: MonitorStat | None, ns: str, index_dir: Path, min_events: int, max_age_s: float | None,
               now: float) -> str:
    """Why a namespace's status cannot back a verdict ('' when it can)."""
    if stat is None:
        return f"no live quality for {_name(ns)} in {index_dir / STATUS}; is `dreamstream monitor` running for it?"
    if max_age_s is not None and now - stat.updated_at > max_age_s:
        return (f"the live quality of {_name(ns)} is {now - stat.updated_at:.0f} s old (over {max_age_s:.0f} s); "
                "is `dreamstream monitor` still running?")
    if stat.window < min_events or stat.hitrate is None:
        return (f"{_name(ns)} has {stat.window} scored events, fewer than the {min_events} a verdict needs; "
                "wait for more traffic")
    return ""


def gate(index_dir: Path, new_ns: str, old_ns: str, margin: float = 0.0, min_events: int = DEFAULT_MIN_EVENTS,
         max_age_s: float | None = DEFAULT_MAX_AGE_S, now: float | None = None) -> tuple[bool, str]:
    """May readers switch from ``old_ns`` to ``new_ns``? True when new's live hit rate >= old's - ``margin``.

    Refused (False, and why) when either namespace has no status, fewer than
    ``min_events`` scored events in its window, or a status older than
    ``max_age_s`` (the monitor stopped: its numbers no longer describe the
    traffic).
    """
    try:
        stats = read_monitor(index_dir)
    except IndexCorruptError as err:
        return False, f"the live quality cannot be read: {err}; the next write of `dreamstream monitor` replaces it"
    now = time.time() if now is None else now
    for ns in (new_ns, old_ns):
        refusal = _not_ready(stats.get(ns), ns, Path(index_dir), min_events, max_age_s, now)
        if refusal:
            return False, refusal
    new, old = stats[new_ns], stats[old_ns]
    verdict = (f"{_name(new_ns)} hitrate {new.hitrate:.4f} over {new.window} events vs {_name(old_ns)} "
               f"{old.hitrate:.4f} over {old.window} (margin {margin:g})")
    if new.hitrate >= old.hitrate - margin:
        return True, "passes: " + verdict
    return False, "refused: " + verdict
