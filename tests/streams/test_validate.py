"""Event decoding and validation: every way a message can be wrong gives a reason, nothing raises."""
from __future__ import annotations

import math

import msgpack
from hypothesis import given, settings, strategies as st

from dreamstream import codec
from streams.domain.validate import MAX_EVENT_BYTES, decode_message

NOW = 1_700_000_000_000


def ev(**over):
    base = {"user": "u1", "video": "v1", "ts": NOW - 1000, "watch_ms": 5000, "duration_ms": 10000}
    base.update(over)
    return base


def one(value, key=b"u1"):
    return decode_message(key, value, NOW, 3, 42)


def test_valid_event_and_batch():
    events, rej = one(codec.pack(ev()))
    assert rej == [] and len(events) == 1
    e = events[0]
    assert (e.user, e.video, e.kind, e.partition, e.offset, e.index) == ("u1", "v1", "watch", 3, 42, 0)
    events, rej = one(codec.pack([ev(), ev(video=7, kind="impression")]))
    assert rej == [] and [x.index for x in events] == [0, 1] and events[1].video == "7"


def test_int_user_matches_text_key():
    events, rej = one(codec.pack(ev(user=12)), key=b"12")
    assert rej == [] and events[0].user == "12"


BAD = {
    "not msgpack": (b"\xc1\xc1\xc1", "not msgpack"),
    "not a map": (codec.pack("hello"), "map or an array"),
    "missing": (codec.pack({"user": "u1", "video": "v"}), "missing field"),
    "user type": (codec.pack(ev(user=1.5)), "'user' must be a str or int"),
    "user bool": (codec.pack(ev(user=True)), "'user' must be a str or int"),
    "long id": (codec.pack(ev(video="x" * 300)), "longer than 256"),
    "ts str": (codec.pack(ev(ts="now")), "'ts' must be an int"),
    "ts negative": (codec.pack(ev(ts=-1)), "negative or more than a day"),
    "ts future": (codec.pack(ev(ts=NOW + 2 * 86_400_000)), "more than a day in the future"),
    "watch nan": (codec.pack(ev(watch_ms=math.nan)), "finite"),
    "watch neg": (codec.pack(ev(watch_ms=-1)), "outside"),
    "watch huge": (codec.pack(ev(watch_ms=86_400_001)), "outside"),
    "duration zero": (codec.pack(ev(duration_ms=0)), "outside"),
    "duration str": (codec.pack(ev(duration_ms="10")), "must be a number"),
    "kind": (codec.pack(ev(kind="like")), "'kind' must be one of"),
    "too big": (codec.pack(ev(pad="x" * MAX_EVENT_BYTES)), "over the 65536-byte limit"),
    "key mismatch": (codec.pack(ev(user="u2")), "does not match"),
    "empty array": (codec.pack([]), "empty array"),
    "null": (None, "null"),
}


def test_each_bad_input_has_its_reason():
    for name, (value, words) in BAD.items():
        events, rej = one(value)
        assert events == [], name
        assert len(rej) == 1 and words in rej[0].reason, (name, rej)
        assert value is None or rej[0].value == value


def test_bad_elements_of_a_batch_do_not_spoil_the_good_ones():
    events, rej = one(codec.pack([ev(), ev(ts="x"), ev(video="v2"), 5]))
    assert [e.video for e in events] == ["v1", "v2"] and [e.index for e in events] == [0, 2]
    assert len(rej) == 2 and rej[0].reason.startswith("array element 1:") and rej[1].reason.startswith("array element 3:")
    assert codec.unpack(rej[0].value)["ts"] == "x"


scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(allow_nan=True), st.text(max_size=20), st.binary(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=12), inner, max_size=6)), max_leaves=20)
fields = st.fixed_dictionaries({}, optional={
    "user": st.one_of(st.just("u1"), values), "video": st.one_of(st.text(min_size=1, max_size=8), values),
    "ts": st.one_of(st.integers(-10, NOW * 2), values), "watch_ms": st.one_of(st.floats(-10, 1e8), values),
    "duration_ms": st.one_of(st.floats(-10, 1e8), values), "kind": st.one_of(st.sampled_from(["watch", "impression", "x"]), values),
})


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes_never_raise(data):
    events, rej = one(data)
    assert len(events) + len(rej) >= 1


@settings(max_examples=400, deadline=None)
@given(st.one_of(fields, st.lists(fields, max_size=5), values))
def test_fuzz_structures_every_input_accounted_for(obj):
    data = msgpack.packb(obj, use_bin_type=True)
    events, rej = one(data)
    n = len(obj) if isinstance(obj, list) and obj else 1
    assert len(events) + len(rej) == n
    for e in events:
        assert e.user == "u1" and 0 <= e.watch_ms <= 86_400_000 and 0 < e.duration_ms <= 86_400_000
        assert 0 <= e.ts <= NOW + 86_400_000 and e.kind in ("watch", "impression")
    for r in rej:
        assert r.reason


edge_ids = st.one_of(st.text(max_size=70), st.text(alphabet="ab", min_size=60, max_size=70), st.integers(-5, 5), st.booleans(),
                     st.none(), st.floats(), st.binary(max_size=4))
edge_numbers = st.one_of(st.integers(-5, 2**70), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
                         st.sampled_from([0, 0.0, -0.0, 86_400_000, 86_400_000.5, 86_400_001]), st.text(max_size=3))


def mostly(valid, edge):
    """A field that is usually valid, so most examples have one or two odd fields among good ones."""
    return st.one_of(st.just(valid), st.just(valid), st.just(valid), edge)


edge_events = st.fixed_dictionaries({
    "user": mostly("u1", edge_ids), "video": mostly("v1", edge_ids),
    "ts": mostly(NOW - 1000, st.one_of(st.integers(-5, NOW * 2), st.sampled_from([NOW + 86_400_000, NOW + 86_400_001]),
                                       edge_numbers)),
    "watch_ms": mostly(5000, edge_numbers), "duration_ms": mostly(10000.0, edge_numbers),
}, optional={"kind": st.one_of(st.sampled_from(["watch", "impression", "x", None]), edge_numbers)})


@settings(max_examples=1500, deadline=None)
@given(edge_events, st.one_of(st.none(), st.just(b"u1"), st.binary(max_size=6), st.text(max_size=6).map(str.encode)))
def test_the_fast_path_accepts_only_what_the_full_checks_accept_as_the_same_event(obj, key):
    """parse_event's shortcut (_typical) must never let through what _checked refuses, nor build another Event."""
    from streams.domain.validate import _checked, _typical

    if "user" in obj and key == b"u1":
        key = codec.key_bytes(obj["user"]) if isinstance(obj["user"], (str, int)) else key  # often a matching key
    fast = _typical(obj, key, NOW, 3, 42, 1)
    if fast is None:
        return
    assert fast == _checked(obj, key, NOW, 3, 42, 1)
    assert type(fast.watch_ms) is float and type(fast.duration_ms) is float


def test_the_fast_path_takes_the_everyday_event():
    """If it declined typical events the shortcut would be dead code that costs a call."""
    from streams.domain.validate import _typical

    assert _typical(ev(kind="impression"), b"u1", NOW, 3, 42, 0) is not None
    assert _typical(ev(watch_ms=1.5), None, NOW, 3, 42, 0) is not None
