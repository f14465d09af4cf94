"""apply_batch against independent computations: numpy DreamUMM, and event-by-event ONNX at batch 1.

Rows are stored in 16-bit block floating point (``streams.domain.block_scale``):
every event may move an element by up to 2**-14 of its part's largest
magnitude, so a comparison with a float reference allows that much per event
(:func:`rounding`); comparisons between two runs of ``apply_batch`` are exact.
"""
from __future__ import annotations

import math

import numpy as np

from dreamstream.settings import Settings
from streams.domain import state as state_mod
from streams.domain.apply import apply_batch
from streams.domain.records import read_record
from streams.domain.validate import Event

NOW = 1_700_000_000_000


def make_events(n_users: int, n_events: int, items: list[str], seed: int = 0, impressions: float = 0.0) -> list[Event]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_events):
        kind = "impression" if rng.random() < impressions else "watch"
        dur = float(rng.integers(1000, 60000))
        out.append(Event(f"u{rng.integers(n_users)}", items[rng.integers(len(items))], NOW + i * 1000,
                         float(rng.uniform(0, 1.6) * dur), dur, kind, 0, i))
    return out


def settings(**kw) -> Settings:
    base = dict(cold_min_positive=0, half_life_s=math.inf)
    base.update(kw)
    return Settings(**base)


def rounding(reference: np.ndarray, events: int) -> float:
    """The most ``events`` stored steps may have moved an element of a part like ``reference`` (plus float32 noise)."""
    return events * 2.0 ** -14 * float(np.abs(reference).max()) + 1e-5


def sequential(events, items, bundle, s):
    """Apply one event at a time at batch 1, each result fed to the next: the order-faithful reference."""
    states: dict = {}
    records: dict = {}
    for ev in events:
        res = apply_batch(states, [ev], items, bundle, s)
        states.update(res.states)
        records.update(res.records)
    return states, records


def test_dreamumm_matches_numpy_and_seq_counts(bundle, item_vectors, item_store):
    ids = list(item_vectors)
    events = make_events(40, 600, ids)
    s = settings()
    res = apply_batch({}, events, item_store, bundle, s)
    assert res.applied == 600 and res.waves > 1
    eng = s.engagement
    for user, st in res.states.items():
        mine = [e for e in events if e.user == user]
        r = eng.weight([e.watch_ms for e in mine], [e.duration_ms for e in mine])
        ref = (r[:, None] * np.stack([item_vectors[e.video] for e in mine]).astype(np.float64)).sum(0)
        np.testing.assert_allclose(st.state, ref, rtol=0, atol=rounding(ref, len(mine)))
        rec = read_record(res.records[user])
        assert rec["seq"] == len(mine) == st.seq and rec["ts"] == mine[-1].ts and rec["model"] == bundle.version
        cos = float(rec["vector"] @ ref / np.linalg.norm(ref))
        assert cos > 0.9999
        assert rec["interests"].shape == (bundle.manifest.interests, bundle.manifest.dim)
        assert abs(sum(rec["interest_weights"]) - 1) < 1e-4 and rec["cold"] is False


def test_batched_equals_event_by_event_with_decay_and_impressions(bundle, item_vectors, item_store):
    ids = list(item_vectors)
    events = make_events(25, 300, ids, seed=1, impressions=0.2)
    s = settings(half_life_s=60.0, cold_min_positive=5)
    batched: dict = {}
    batched_records: dict = {}
    for start in range(0, len(events), 97):  # uneven batches, state carried across
        res = apply_batch(batched, events[start:start + 97], item_store, bundle, s)
        batched.update(res.states)
        batched_records.update(res.records)
    ref, ref_records = sequential(events, item_store, bundle, s)
    assert set(batched) == set(ref)
    for user in ref:
        a, b = batched[user], ref[user]
        assert a.seq == b.seq and a.positives == b.positives and a.impressions == b.impressions
        for name in ("state", "hidden", "glob", "soft", "cand", "interests", "weights"):
            # every event is stored as it is stepped, whatever the batch: equal up to ONNX's batch-size noise
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-4, atol=1e-4, err_msg=name)
        ra, rb = read_record(batched_records[user]), read_record(ref_records[user])
        np.testing.assert_allclose(ra["vector"], rb["vector"], atol=1e-5)
        np.testing.assert_allclose(ra["interests"], rb["interests"], atol=1e-5)
        assert ra["cold"] == rb["cold"] == (a.positives < 5)


def test_opal_soft_sum_and_decay_independent(bundle, item_vectors, item_store):
    """soft = sum_t g(T - t) * p_t (x) v_t: recompute from the ONNX probs, one event at a time."""
    ids = list(item_vectors)
    events = [Event("u", ids[i % 50], NOW + i * 30_000, 9000.0, 10000.0, "watch", 0, i) for i in range(12)]
    s = settings(half_life_s=10.0, opal_half_life_s=120.0)  # OPAL's own half-life, not the user vector's
    st = apply_batch({}, events, item_store, bundle, s).states["u"]
    sess = bundle.sessions["opal_step"]
    m = bundle.manifest
    hid, glo, soft = np.zeros((1, m.interests, m.hidden), np.float32), np.zeros((1, m.hidden), np.float32), np.zeros((m.interests, m.dim))
    for i, ev in enumerate(events):
        g = 1.0 if i == 0 else 0.5 ** (30.0 / 120.0)
        v = item_vectors[ev.video][None].astype(np.float32)
        hid, glo, _, probs = sess.run(["hidden_out", "global_out", "soft_out", "probs"], {
            "item": v, "hidden": hid, "global": glo, "soft": np.zeros((1, m.interests, m.dim), np.float32),
            "decay": np.ones((1, 1), np.float32)})
        soft = g * soft + probs[0][:, None] * v[0][None, :].astype(np.float64)
    np.testing.assert_allclose(st.soft, soft, rtol=0, atol=rounding(soft, len(events)))
    np.testing.assert_allclose(st.hidden, hid[0], atol=rounding(hid, len(events)))


def test_replays_are_skipped_and_stored_record_resent(bundle, item_vectors, item_store):
    ids = list(item_vectors)
    events = make_events(10, 100, ids, seed=2)
    s = settings()
    first = apply_batch({}, events[:60], item_store, bundle, s)
    # a crash replays from offset 30: 30..59 must be skipped, 60..99 applied
    again = apply_batch(first.states, events[30:], item_store, bundle, s)
    clean = apply_batch({}, events, item_store, bundle, s)
    assert again.replays == 30 and again.applied == 40
    merged = {**first.states, **again.states}
    for user, st in clean.states.items():
        assert merged[user].seq == st.seq
        np.testing.assert_allclose(merged[user].state, st.state, atol=1e-5)
    # all events of a batch already applied: the record built from the stored row is the one published, byte for byte
    published = {**first.records, **again.records}
    stored = {user: state_mod.decode(state_mod.encode(st)) for user, st in merged.items()}  # as read from the table
    replay = apply_batch(stored, events[90:], item_store, bundle, s)
    assert replay.applied == 0 and replay.states == {} and replay.records
    for user, rec in replay.records.items():
        assert rec == published[user]


def test_unknown_videos_are_returned_not_applied(bundle, item_vectors, item_store):
    ids = list(item_vectors)
    events = [Event("u", ids[0], NOW, 5000.0, 10000.0, "watch", 0, 0), Event("u", "nope", NOW + 1, 5000.0, 10000.0, "watch", 0, 1),
              Event("u", ids[1], NOW + 2, 5000.0, 10000.0, "watch", 0, 2)]
    res = apply_batch({}, events, item_store, bundle, settings())
    assert [e.video for e in res.unknown] == ["nope"] and res.states["u"].seq == 2


def test_cold_user_from_impressions_only(bundle, item_vectors, item_store):
    ids = list(item_vectors)
    events = [Event("c", ids[i], NOW + i, 0.0, 10000.0, "impression", 0, i) for i in range(3)]
    res = apply_batch({}, events, item_store, bundle, settings(cold_min_positive=5))
    rec = read_record(res.records["c"])
    cand = np.sum([item_vectors[i] for i in ids[:3]], axis=0)
    assert rec["cold"] is True and rec["seq"] == 3
    assert float(rec["vector"] @ cand / np.linalg.norm(cand)) > 0.9999
    assert np.isfinite(rec["interests"]).all() and np.allclose(np.linalg.norm(rec["interests"], axis=1), 1, atol=1e-3)


def test_state_row_round_trip(bundle, item_vectors, item_store):
    res = apply_batch({}, make_events(3, 20, list(item_vectors)), item_store, bundle, settings())
    for st in res.states.values():
        back = state_mod.decode(state_mod.encode(st))
        assert back.seq == st.seq and (back.partition, back.offset, back.index) == (st.partition, st.offset, st.index)
        assert np.array_equal(back.codes, st.codes) and np.array_equal(back.exps, st.exps)
        for name in ("state", "hidden", "glob", "soft", "cand", "interests", "weights"):
            assert np.array_equal(getattr(back, name), getattr(st, name))


def test_a_quick_skip_moves_dreamumm_but_only_ages_opal(bundle, item_vectors, item_store):
    """OPAL is trained on positive events: a skip leaves the GRU states alone and only decays the soft interests."""
    ids = list(item_vectors)
    liked = Event("u", ids[0], NOW, 9000.0, 10000.0, "watch", 0, 0)
    skip = Event("u", ids[1], NOW + 60_000, 500.0, 10000.0, "watch", 0, 1)
    s = settings(half_life_s=60.0, opal_half_life_s=60.0)
    before = apply_batch({}, [liked], item_store, bundle, s).states["u"]
    after = apply_batch({"u": before}, [skip], item_store, bundle, s).states["u"]
    np.testing.assert_array_equal(after.hidden, before.hidden)
    np.testing.assert_array_equal(after.glob, before.glob)
    np.testing.assert_allclose(after.soft, 0.5 * before.soft, rtol=1e-6)
    assert not np.allclose(after.state, before.state) and after.seq == 2 and after.positives == 1
    kept = apply_batch({"u": before}, [skip], item_store, bundle, settings(half_life_s=60.0)).states["u"]
    np.testing.assert_array_equal(kept.soft, before.soft)  # the default: OPAL's interests do not decay


def test_records_delivered_out_of_offset_order_are_all_applied(bundle, item_vectors, item_store):
    """Around a rebalance a batch can hold a partition's records out of order; none may be taken for a replay."""
    ids = list(item_vectors)
    events = [Event("u", ids[i], NOW + i * 1000, 9000.0, 10000.0, "watch", 2, 100 + i) for i in range(6)]
    shuffled = [events[3], events[4], events[0], events[5], events[1], events[2]]
    s = settings()
    in_order = apply_batch({}, events, item_store, bundle, s).states["u"]
    result = apply_batch({}, shuffled, item_store, bundle, s)
    got = result.states["u"]
    assert result.replays == 0 and got.seq == in_order.seq == 6 and got.offset == 105
    np.testing.assert_allclose(got.state, in_order.state, atol=1e-6)


def test_batched_records_are_byte_for_byte_what_msgpack_makes_of_the_map() -> None:
    """user_records joins byte slices instead of packing a map per user; readers must not see a difference."""
    from dreamstream import codec
    from streams.domain.records import user_records

    rng = np.random.default_rng(5)
    for k, d in [(4, 64), (1, 3), (17, 8), (2, 100)]:  # fixarray and array16 weights; bin8 and bin16 payloads
        n = 5
        users = ["u", "ü-ser", "x" * 40, "7", "long" * 60]
        seqs, tss = [1, 127, 128, 70_000, 2**33], [0, 1_700_000_000_000, -1, 5, 2**40]
        vectors, interests = rng.standard_normal((n, d)).astype(np.float32), rng.standard_normal((n, k, d)).astype(np.float32)
        weights, colds = rng.random((n, k)).astype(np.float32), [True, False, False, True, False]
        got = user_records(users, seqs, tss, "v20261124-1", vectors, interests, weights, colds)
        for i in range(n):
            want = codec.pack({"user": users[i], "seq": seqs[i], "ts": tss[i], "model": "v20261124-1", "space": "",
                               "vector": codec.vec_to_bin(vectors[i]), "interests": codec.vec_to_bin(interests[i]),
                               "interest_ids": list(range(k)), "interest_weights": weights[i].tolist(), "cold": colds[i]})
            assert got[i] == want, (k, d, i)


def test_stored_rows_stay_near_float32_over_a_long_history(bundle, item_vectors, item_store):
    """2,000 liked videos in a row, OPAL undecayed (the default): every event stored in 16 bits, against the same
    ONNX steps in float32 that never store. The error must not grow into what a reader would see."""
    from dreamstream.engagement import decay

    ids = list(item_vectors)
    events = [Event("u", ids[(7 * i) % len(ids)], NOW + i * 20_000, 9000.0, 10000.0, "watch", 0, i) for i in range(2000)]
    s = settings(half_life_s=600.0)
    got = apply_batch({}, events, item_store, bundle, s)
    st, rec = got.states["u"], read_record(got.records["u"])
    m = bundle.manifest
    S = np.zeros((1, m.dim), np.float32)
    hid, glo = np.zeros((1, m.interests, m.hidden), np.float32), np.zeros((1, m.hidden), np.float32)
    soft = np.zeros((1, m.interests, m.dim), np.float32)
    r = s.engagement.weight([9000.0], [10000.0])[:, None].astype(np.float32)
    for i, ev in enumerate(events):
        v = item_vectors[ev.video][None].astype(np.float32)
        g = np.full((1, 1), 1.0 if i == 0 else decay(20_000, 600.0), np.float32)
        S = bundle.sessions["dreamumm_step"].run(["state_out"], {"state": S, "item": v, "weight": r, "decay": g})[0]
        hid, glo, soft, inter, wts = bundle.sessions["opal_step"].run(
            ["hidden_out", "global_out", "soft_out", "interests", "weights"],
            {"item": v, "hidden": hid, "global": glo, "soft": soft, "decay": np.ones((1, 1), np.float32)})

    def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)

    assert cos(rec["vector"], S[0]) > 0.99999
    assert cos(st.soft, soft[0]).min() > 0.99999  # 2,000 undecayed sums
    assert cos(rec["interests"], inter[0]).min() > 0.9999
    np.testing.assert_allclose(rec["interest_weights"], wts[0], atol=1e-3)
    np.testing.assert_allclose(st.hidden, hid[0], atol=1e-3)


def test_a_batch_mixing_replayed_and_new_users_keeps_each_users_state(bundle, item_vectors, item_store):
    """After a crash a batch holds users whose events are all replays next to users with new events: each new
    state is its own user's (rows of the batch are not the order of the applied users)."""
    ids = list(item_vectors)
    events = make_events(12, 120, ids, seed=5)
    s = settings()
    first = apply_batch({}, events[:60], item_store, bundle, s)
    replayed = [e for e in events[:60] if e.user in {"u0", "u1", "u2"}][-3:]  # replays first in the batch
    fresh = [e for e in events[60:] if e.user not in {"u0", "u1", "u2"}]
    mixed = apply_batch(first.states, replayed + fresh, item_store, bundle, s)
    alone = apply_batch(first.states, fresh, item_store, bundle, s)
    assert mixed.replays == len(replayed) and set(mixed.states) == set(alone.states)
    for user, st in alone.states.items():
        assert np.array_equal(mixed.states[user].codes, st.codes) and mixed.records[user] == alone.records[user]
