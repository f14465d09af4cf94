"""Apply a batch of valid events to user states with the bundle's ONNX steps: the worker's math.

Pure: states and events in, new states and records out; no broker, no
table, so it is tested against an independent numpy computation.

Batching without reordering: events of one user must be applied in their
order, so a batch is cut into *waves*: wave ``w`` holds the ``w``-th event of
every user that has one. Each wave is one ``session.run`` per step over all
its users. States are gathered once per batch into dense arrays (one row
per touched user), waves index into those rows, and the rows are scattered
back into per-user states once at the end.

Per event (design, "Update math"), with decay ``g`` over the event-time gap
since the user's last applied event:

* watch: DreamUMM ``s <- g*s + r*v`` and the OPAL step (GRU of the assigned
  interest, global GRU, ``soft <- g*soft + p (x) v``); candidate sum decays;
* impression: the user vector does not move (``s``, ``soft`` and the
  candidate sum decay by ``g``), the candidate sum gains ``w_imp * v``.

A replayed event (at or before the row's stored position) is skipped;
a user whose events in this batch were all replays gets its stored record
again, so a record lost in a crash is re-sent with the same bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from dreamstream import dreamumm_ref
from dreamstream.engagement import IMPRESSION, decay
from dreamstream.settings import Settings
from streams import records
from streams.state import NO_TS, UserState, flat_size, new_state, parts
from streams.validate import Event


class StepBundle(Protocol):
    """What apply needs of a model bundle (``dreamstream.bundle.Bundle`` is one)."""

    version: str
    manifest: Any  # .dim, .interests, .hidden
    sessions: Mapping[str, Any]  # onnxruntime sessions by contract name


@dataclass
class BatchResult:
    """What one batch did: new states and records of touched users, and what it did not apply."""

    states: dict[str, UserState] = field(default_factory=dict)
    records: dict[str, bytes] = field(default_factory=dict)
    applied: int = 0
    replays: int = 0
    unknown: list[Event] = field(default_factory=list)
    waves: int = 0


_HYPER_CACHE: dict[int, np.ndarray] = {}


def hyper_categories(bundle: StepBundle) -> np.ndarray:
    """The OPAL hyper-category embeddings C [K, D], read off the ONNX step itself.

    An interest that has seen no event reads out as its hyper-category
    embedding, so one probe step from a zero state with items assigned to
    different interests reveals every row. Needed only for users with
    impressions but no watch yet; cached per bundle.
    """
    key = id(bundle)
    if key not in _HYPER_CACHE:
        m = bundle.manifest
        k, d, h = m.interests, m.dim, m.hidden
        n = 64 * k
        rng = np.random.default_rng(0)
        items = rng.standard_normal((n, d)).astype(np.float32)
        items /= np.linalg.norm(items, axis=1, keepdims=True)
        out = _run(bundle.sessions["opal_step"], ["interests", "assign"], item=items, hidden=np.zeros((n, k, h), np.float32),
                   glob=np.zeros((n, h), np.float32), soft=np.zeros((n, k, d), np.float32), decay=np.ones((n, 1), np.float32))
        interests, assign = out
        hyper = np.zeros((k, d), np.float32)
        for j in range(k):
            rows = np.nonzero(assign != j)[0]
            if len(rows):
                hyper[j] = interests[rows[0], j]
        _HYPER_CACHE[key] = hyper
    return _HYPER_CACHE[key]


ONNX_CHUNK = 512  # rows per session.run: at 4,096 rows the tensors fell out of cache (8.8 us/event vs 4.3-4.8 at 512-1,024)


def run_chunked(session: Any, outputs: list[str] | None, feeds: dict[str, np.ndarray], chunk: int = ONNX_CHUNK
                ) -> list[np.ndarray]:
    """``session.run`` over row slices of at most ``chunk``: the step functions are per row, so this is exact.

    The first slice learns the output shapes; the others write straight into
    slices of the full outputs through an I/O binding. Concatenating the
    slices' outputs instead cost ~1 µs per event at 8,192 rows (a copy of
    every output, ~3 KB per row).
    """
    n = len(next(iter(feeds.values())))
    if n <= chunk:
        return session.run(outputs, feeds)
    names = outputs or [o.name for o in session.get_outputs()]
    first = session.run(names, {k: v[:chunk] for k, v in feeds.items()})
    full = [np.empty((n, *part.shape[1:]), part.dtype) for part in first]
    for out, part in zip(full, first):
        out[:chunk] = part
    binding = session.io_binding()
    for i in range(chunk, n, chunk):
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value[i:i + chunk]))
        for name, out in zip(names, full):
            rows = out[i:i + chunk]  # a contiguous view: outputs are C-ordered with rows first
            binding.bind_output(name, "cpu", 0, out.dtype, list(rows.shape), rows.ctypes.data)
        session.run_with_iobinding(binding)
    return full


def _run(session: Any, outputs: list[str], glob: np.ndarray | None = None, **feeds: np.ndarray) -> list[np.ndarray]:
    if glob is not None:
        feeds["global"] = glob
    return run_chunked(session, outputs, feeds)


def _gather(arrays: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """The arrays stacked into one float32 [n, *shape] array.

    Why not ``np.stack``: it makes a view of every array before joining them,
    ~0.5-0.7 µs an array. With live traffic a batch gathers a state per user
    and an item vector per event, and that was ~9% of the worker's time.
    Joining the flat arrays and reshaping gives the same array 3.5x faster.
    """
    if not arrays:
        return np.zeros((0, *shape), np.float32)
    return np.concatenate(arrays).astype(np.float32, copy=False).reshape(len(arrays), *shape)


def user_vectors(states: np.ndarray, cands: np.ndarray, positives: np.ndarray, settings: Settings
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Published vectors [n, D] and cold flags [n]: DreamUMM ``s/|s|``, blended by Candidate-DreamUMM while cold."""
    u = dreamumm_ref.normalize(states)
    return dreamumm_ref.candidate_blend(u, dreamumm_ref.normalize(cands), positives, settings.cold_min_positive)


_STREAM_ORDER = attrgetter("partition", "offset", "index")


def in_stream_order(events: Sequence[Event]) -> list[Event]:
    """The batch's events by (partition, offset, index): the order they were written in.

    The worker's feed (``streams.feed``) already hands each partition's
    records over in offset order; sorting here keeps ``apply_batch`` correct
    for any caller, because an event applied after a later one of the same
    user would be taken for a replay and skipped. (It was added when the
    worker still read through a Faust stream, which could deliver re-read
    records after newer ones around a seek.)
    """
    return sorted(events, key=_STREAM_ORDER)


@dataclass
class Plan:
    """A batch's events sorted into users and waves, as columns: one row per touched user, one entry per event to apply.

    Why columns: with live traffic a batch holds about one event per user,
    and building per-wave lists event by event (rows, times, weights, item
    vectors) cost more than the ONNX steps. The event loop only assigns each
    event its user's row and its rank among that user's events; waves are
    then index arrays into columns built once.
    """

    users: list[str]  # touched users, in order of first appearance; row i is users[i]
    bases: list[UserState]  # row i's state before this batch
    lasts: list[Event | None]  # row i's last event to apply (None: all its events were replays or unknown)
    rows: np.ndarray  # per event to apply: its user's row
    ranks: np.ndarray  # per event: how many of its user's events come before it (its wave)
    events: list[Event]  # the events to apply, in stream order
    vectors: list[np.ndarray]  # their item vectors


def plan(states: Mapping[str, UserState | None], events: Sequence[Event], items: Mapping[str, np.ndarray],
         empty: UserState, result: BatchResult) -> Plan:
    """Rows and waves of the events to apply; replays and unknown videos are counted in ``result`` and left out."""
    row: dict[str, int] = {}
    users: list[str] = []
    bases: list[UserState] = []
    lasts: list[Event | None] = []
    rows: list[int] = []
    ranks: list[int] = []
    counts: list[int] = []
    todo: list[Event] = []
    vectors: list[np.ndarray] = []
    for ev in in_stream_order(events):
        i = row.get(ev.user)
        if i is None:
            i = row[ev.user] = len(users)
            users.append(ev.user)
            bases.append(states.get(ev.user) or empty)
            lasts.append(None)
            counts.append(0)
        if _replayed(ev, bases[i], lasts[i]):
            result.replays += 1
            continue
        vec = items.get(ev.video)
        if vec is None:
            result.unknown.append(ev)
            continue
        lasts[i] = ev
        rows.append(i)
        ranks.append(counts[i])
        counts[i] += 1
        todo.append(ev)
        vectors.append(vec)
    return Plan(users, bases, lasts, np.array(rows, np.int64), np.array(ranks, np.int64), todo, vectors)


def _replayed(ev: Event, base: UserState, last: Event | None) -> bool:
    """At or before the stored position, or not after the last event of this batch in the same partition."""
    if base.applied(ev.partition, ev.offset, ev.index):
        return True
    return last is not None and last.partition == ev.partition and last.position >= ev.position


def _event_columns(events: Sequence[Event], settings: Settings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per event: its time, its engagement weight [n, 1] (read for watches only) and whether it is an impression."""
    ts = np.array([ev.ts for ev in events], np.int64)
    weight = settings.engagement.weight([ev.watch_ms for ev in events], [ev.duration_ms for ev in events])[:, None]
    return ts, weight, np.array([ev.kind == IMPRESSION for ev in events], bool)


def waves(ranks: np.ndarray) -> list[np.ndarray]:
    """Wave ``w``: the indexes of every user's ``w``-th event (each user at most once, so a wave is one batched step)."""
    if not len(ranks):
        return []
    order = np.argsort(ranks, kind="stable")
    bounds = np.searchsorted(ranks[order], np.arange(int(ranks.max()) + 2))
    return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def apply_batch(
    states: Mapping[str, UserState | None],
    events: Sequence[Event],
    items: Mapping[str, np.ndarray],
    bundle: StepBundle,
    settings: Settings,
) -> BatchResult:
    """Apply ``events`` (in log order, see :func:`in_stream_order`) to ``states``; see the module docstring."""
    d, k, h = bundle.manifest.dim, bundle.manifest.interests, bundle.manifest.hidden
    result = BatchResult()
    p = plan(states, events, items, new_state(d, k, h), result)  # new users share one empty state: only read below
    users, bases = p.users, p.bases
    n = len(users)
    X = _gather([b.flat for b in bases], (flat_size(d, k, h),))  # every state of the batch, one row per user
    S, Hd, G, O, C = parts(X, d, k, h)  # views: stepping them steps X
    last_ts = np.array([b.last_ts for b in bases], np.int64)
    seq = np.array([b.seq for b in bases], np.int64)
    pos = np.array([b.positives for b in bases], np.int64)
    imp = np.array([b.impressions for b in bases], np.int64)
    interests = np.zeros((n, k, d), np.float32)  # the last OPAL readout of each row in this batch
    weights = np.zeros((n, k), np.float32)
    stepped = np.zeros(n, bool)  # rows OPAL stepped in this batch (the others keep their stored readout)

    ts_all, r_all, imp_all = _event_columns(p.events, settings)
    V_all = _gather(p.vectors, (d,))
    wave_list = waves(p.ranks)
    result.waves = len(wave_list)
    for sel in wave_list:
        idx, ts = p.rows[sel], ts_all[sel]
        prev = last_ts[idx]
        g = np.where(prev == NO_TS, 1.0, decay(ts - prev, settings.half_life_s)).astype(np.float32)
        V, is_imp = V_all[sel], imp_all[sel]
        watch = ~is_imp
        # impressions: nothing moves but decay; the candidate sum gains the impressed video
        if is_imp.any():
            ii, gi = idx[is_imp], g[is_imp]
            S[ii] *= gi[:, None]
            O[ii] *= gi[:, None, None]
            C[ii] = gi[:, None] * C[ii] + settings.impression_weight * V[is_imp]
            imp[ii] += 1
        if watch.any():
            wi, gw, r, Vw = idx[watch], g[watch][:, None], r_all[sel][watch], V[watch]
            S[wi] = _run(bundle.sessions["dreamumm_step"], ["state_out"], state=S[wi], item=Vw, weight=r, decay=gw)[0]
            C[wi] *= gw
            liked = r[:, 0] > 0
            pos[wi] += liked
            # OPAL follows what the user engaged with, as it was trained (positive events only); a quick
            # skip moves the DreamUMM vector away but only ages the OPAL soft interests
            O[wi[~liked]] *= gw[~liked][:, :, None]
            if liked.any():
                pi, gp = wi[liked], gw[liked]
                hid, glo, soft, inter, wts = _run(
                    bundle.sessions["opal_step"], ["hidden_out", "global_out", "soft_out", "interests", "weights"],
                    item=Vw[liked], hidden=Hd[pi], glob=G[pi], soft=O[pi], decay=gp,
                )
                Hd[pi], G[pi], O[pi] = hid, glo, soft
                interests[pi], weights[pi], stepped[pi] = inter, wts, True
        last_ts[idx] = np.maximum(prev, ts)
        seq[idx] += 1
        result.applied += len(sel)

    done = [i for i in range(n) if p.lasts[i] is not None]
    for i in range(n):
        if p.lasts[i] is None and bases[i].record:  # every event a replay (or unknown): re-send what is stored
            result.records[users[i]] = bases[i].record
    if not done:
        return result
    rows = np.array(done, np.int64)
    vectors, colds = user_vectors(S[rows], C[rows], pos[rows], settings)  # one batched call, not one per user
    for i in rows[~stepped[rows]]:  # OPAL did not step these in this batch: they keep their readout
        interests[i], weights[i] = _stored_readout(bases[i], bundle)
    seqs, tss = seq[rows].tolist(), last_ts[rows].tolist()
    done_users = [users[i] for i in done]
    packed = records.user_records(done_users, seqs, tss, bundle.version, vectors, interests[rows], weights[rows],
                                  colds.tolist())
    dims = (d, k, h)
    counters = zip(done, done_users, seqs, tss, pos[rows].tolist(), imp[rows].tolist(), packed)
    for i, u, n_seq, ts, n_pos, n_imp, record in counters:
        last = p.lasts[i]
        # X[i] is a view into this call's array, which nothing writes after the return
        result.states[u] = UserState(X[i], dims, n_seq, ts, n_pos, n_imp, last.partition, last.offset, last.index, record)
        result.records[u] = record
    return result


def _stored_readout(old: UserState, bundle: StepBundle) -> tuple[np.ndarray, np.ndarray]:
    """Interests and weights of a user OPAL did not step in this batch: the stored record's, else the prior."""
    if old.record and old.seq > old.impressions:  # it has seen a watch: its record holds OPAL's readout
        rec = records.read_record(old.record)
        return rec["interests"], np.asarray(rec["interest_weights"], np.float32)
    k = bundle.manifest.interests
    return hyper_categories(bundle), np.full(k, 1.0 / k, np.float32)
