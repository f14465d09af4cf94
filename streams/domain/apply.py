"""Apply a batch of valid events to user states with the bundle's ONNX steps: the worker's math.

Pure: states and events in, new states and records out; no broker, no
table, so it is tested against an independent numpy computation.

A batch is stepped in *waves* (``streams.domain.batch_plan``): wave ``w``
holds the ``w``-th event of every user that has one, and is one
``session.run`` per step over all its users. States are gathered once per batch into dense arrays (one row
per touched user), waves index into those rows, and the rows are scattered
back into per-user states once at the end.

Per event (design, "Update math"), with decay ``g`` over the event-time gap
since the user's last applied event:

* watch: DreamUMM ``s <- g*s + r*v`` and the OPAL step (GRU of the assigned
  interest, global GRU, ``soft <- g_o*soft + p (x) v``); candidate sum decays;
* impression: the user vector does not move (``s`` and the candidate sum
  decay by ``g``, ``soft`` by ``g_o``), the candidate sum gains ``w_imp * v``.

``g`` decays with ``DREAMSTREAM_HALF_LIFE_S`` (the session), ``g_o`` with
``DREAMSTREAM_OPAL_HALF_LIFE_S`` (OPAL's long-term interests; inf: 1).

A replayed event (at or before the row's stored position) is skipped;
a user whose events in this batch were all replays gets its record again,
built from the stored row, so a record lost in a crash is re-sent with the
same bytes. Rows are stored in 16-bit block floating point
(``streams.domain.block_scale``): the batch steps float32 arrays and
leaves each event's rows quantised, as a row stores them (so no result
depends on how events were cut into batches); records are built from the
quantised values, the same numbers a later batch reads back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from dreamstream import dreamumm_ref
from dreamstream.engagement import IMPRESSION, decay
from dreamstream.settings import Settings
from streams.domain import block_scale, records
from streams.domain.batch_plan import ItemLookup, plan, waves
from streams.domain.onnx_steps import run_step
from streams.domain.state import NO_TS, PARTS, UserState, cuts, flat_size, new_state, parts
from streams.domain.validate import Event


class StepBundle(Protocol):
    """What apply needs of a model bundle (``dreamstream.bundle.Bundle`` is one)."""

    version: str
    manifest: Any  # .dim, .interests, .hidden
    sessions: Mapping[str, Any]  # onnxruntime sessions by contract name
    hyper_categories: np.ndarray  # OPAL's C [K, D]: the readout of an interest that has seen nothing


@dataclass
class BatchResult:
    """What one batch did: new states and records of touched users, and what it did not apply."""

    states: dict[str, UserState] = field(default_factory=dict)
    records: dict[str, bytes] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)  # each record's ``seq`` (catch-up keeps the newest per user)
    applied: int = 0
    replays: int = 0
    unknown: list[Event] = field(default_factory=list)
    waves: int = 0
    # watches of live videos, each with its watcher's unit DreamUMM vector just before it and its weight
    # (the item refiner's input: streams.item_refiner)
    watchers: list[tuple[Event, np.ndarray, float]] = field(default_factory=list)


def _event_columns(events: Sequence[Event], settings: Settings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per event: its time, its engagement weight [n, 1] (read for watches only) and whether it is an impression."""
    ts = np.array([ev.ts for ev in events], np.int64)
    weight = settings.engagement.weight([ev.watch_ms for ev in events], [ev.duration_ms for ev in events])[:, None]
    return ts, weight, np.array([ev.kind == IMPRESSION for ev in events], bool)


def user_vectors(states: np.ndarray, cands: np.ndarray, positives: np.ndarray, settings: Settings
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Published vectors [n, D] and cold flags [n]: DreamUMM ``s/|s|``, blended by Candidate-DreamUMM while cold."""
    u = dreamumm_ref.normalize(states)
    return dreamumm_ref.candidate_blend(u, dreamumm_ref.normalize(cands), positives, settings.cold_min_positive)


def apply_batch(
    states: Mapping[str, UserState | None],
    events: Sequence[Event],
    items: ItemLookup,
    bundle: StepBundle,
    settings: Settings,
) -> BatchResult:
    """Apply ``events`` (in log order, see :func:`in_stream_order`) to ``states``; see the module docstring."""
    d, k, h = bundle.manifest.dim, bundle.manifest.interests, bundle.manifest.hidden
    result = BatchResult()
    p = plan(states, events, items, new_state(d, k, h), live=settings.live_gamma > 0)
    result.replays, result.unknown = p.replays, p.unknown  # new users share one empty state: only read below
    users, bases = p.users, p.bases
    n = len(users)
    cut = cuts(d, k, h)
    codes, exps = _stored_codes(bases, (d, k, h))
    X = block_scale.dequantize(codes, exps, cut)  # every state of the batch, one float32 row per user
    S, Hd, G, O, C, I, W = parts(X, d, k, h)  # views: stepping them steps X
    last_ts = np.array([b.last_ts for b in bases], np.int64)
    seq = np.array([b.seq for b in bases], np.int64)
    pos = np.array([b.positives for b in bases], np.int64)
    imp = np.array([b.impressions for b in bases], np.int64)

    ts_all, r_all, imp_all = _event_columns(p.events, settings)
    V_all = p.vectors.reshape(len(p.events), d)  # one lookup per batch (an empty store has width 0)
    wave_list = waves(p.ranks)
    result.waves = len(wave_list)
    for sel in wave_list:
        idx, ts = p.rows[sel], ts_all[sel]
        prev = last_ts[idx]
        g = np.where(prev == NO_TS, 1.0, decay(ts - prev, settings.half_life_s)).astype(np.float32)
        go = np.where(prev == NO_TS, 1.0, decay(ts - prev, settings.opal_half_life_s)).astype(np.float32)  # OPAL's own
        V, is_imp = V_all[sel], imp_all[sel]
        watch = ~is_imp
        # impressions: nothing moves but decay; the candidate sum gains the impressed video
        if is_imp.any():
            ii, gi = idx[is_imp], g[is_imp]
            S[ii] *= gi[:, None]
            O[ii] *= go[is_imp][:, None, None]
            C[ii] = gi[:, None] * C[ii] + settings.impression_weight * V[is_imp]
            imp[ii] += 1
        if watch.any():
            wi, gw, r, Vw = idx[watch], g[watch][:, None], r_all[sel][watch], V[watch]
            gow = go[watch][:, None]
            if p.live is not None:
                _report_watchers(result, p.events, sel[watch], p.live, S[wi], r[:, 0])
            S[wi] = run_step(bundle.sessions["dreamumm_step"], ["state_out"], state=S[wi], item=Vw, weight=r, decay=gw)[0]
            C[wi] *= gw
            liked = r[:, 0] > 0
            pos[wi] += liked
            # OPAL follows what the user engaged with, as it was trained (positive events only); a quick
            # skip moves the DreamUMM vector away but only ages the OPAL soft interests
            O[wi[~liked]] *= gow[~liked][:, :, None]
            if liked.any():
                pi, gp = wi[liked], gow[liked]
                hid, glo, soft, inter, wts = run_step(
                    bundle.sessions["opal_step"], ["hidden_out", "global_out", "soft_out", "interests", "weights"],
                    item=Vw[liked], hidden=Hd[pi], glob=G[pi], soft=O[pi], decay=gp,
                )
                Hd[pi], G[pi], O[pi] = hid, glo, soft
                I[pi], W[pi] = inter, wts  # the others keep their stored readout
        # each event leaves its user's state as a row stores it, so no result depends on how events were batched
        codes[idx], exps[idx], X[idx] = block_scale.round_trip(X[idx], cut)
        last_ts[idx] = np.maximum(prev, ts)
        seq[idx] += 1
        result.applied += len(sel)

    done = [i for i in range(n) if p.lasts[i] is not None]
    # every event a replay (or unknown): the record built from the stored row is sent again
    resend = [i for i in range(n) if p.lasts[i] is None and bases[i].seq > 0]
    if not done and not resend:
        return result
    dims = (d, k, h)
    rows = np.array(done, np.int64)
    out = np.concatenate([rows, np.array(resend, np.int64)])
    vectors, colds = user_vectors(S[out], C[out], pos[out], settings)  # one batched call, not one per user
    interests, weights = _readouts(I[out], W[out], bundle)
    out_users = [users[i] for i in out]
    seqs, tss = seq[out].tolist(), last_ts[out].tolist()
    packed = records.user_records(out_users, seqs, tss, bundle.version, vectors, interests, weights, colds.tolist(),
                                  settings.namespace)
    for u, n_seq, record in zip(out_users, seqs, packed):
        result.records[u] = record
        result.seqs[u] = n_seq
    counters = zip(done, seqs, tss, pos[rows].tolist(), imp[rows].tolist())
    for i, n_seq, ts, n_pos, n_imp in counters:
        last = p.lasts[i]
        # codes[i] is a view into this call's array, which nothing writes after the return
        result.states[users[i]] = UserState(codes[i], exps[i], dims, n_seq, ts, n_pos, n_imp, last.partition,
                                             last.offset, last.index)
    return result


def _stored_codes(bases: Sequence[UserState], dims: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The rows' stored codes [n, F] and exponents [n, 7], gathered into one writable array each."""
    n, size = len(bases), flat_size(*dims)
    if not n:
        return np.zeros((0, size), np.int16), np.zeros((0, PARTS), np.int8)
    return (np.concatenate([b.codes for b in bases]).reshape(n, size),
            np.concatenate([b.exps for b in bases]).reshape(n, PARTS))


def _report_watchers(result: BatchResult, events: Sequence[Event], picked: np.ndarray, live: np.ndarray,
                     before: np.ndarray, weights: np.ndarray) -> None:
    """Note the wave's watches of live videos with each watcher's unit DreamUMM vector before the watch.

    ``picked``: the wave's watch events (indexes into ``events``), ``before``
    their users' DreamUMM sums before this wave's step (their direction is
    the user's own vector; the decay only scales it). A watcher with no
    history yet (a zero sum) says nothing about the video and is not reported,
    nor is the cold-start candidate blend: only what the user watched.
    """
    on = live[picked]
    if not on.any():
        return
    units = dreamumm_ref.normalize(before[on])
    for j, unit, weight in zip(picked[on].tolist(), units, weights[on].tolist()):
        if unit.any():
            result.watchers.append((events[j], unit, weight))


def _readouts(interests: np.ndarray, weights: np.ndarray, bundle: StepBundle) -> tuple[np.ndarray, np.ndarray]:
    """The rows' OPAL readouts (interests [n, K, D], weights [n, K]); the prior where OPAL never stepped a row.

    The prior (the hyper-categories, equal weights) is what OPAL reads out of
    a state that has seen nothing; it is not stored, so a row that only saw
    impressions and skips follows the served bundle's prior.
    """
    never = ~weights.any(axis=1)
    if never.any():
        interests, weights = interests.copy(), weights.copy()
        interests[never] = bundle.hyper_categories
        weights[never] = 1.0 / weights.shape[1]
    return interests, weights
