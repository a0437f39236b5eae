"""Property: replay(snapshot + tail) == replay(all) == the live state (catalogue items 3, 12)."""

from __future__ import annotations

import tempfile
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventlog import EventStore, NewEvent, RecordedEvent

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
events = st.builds(
    NewEvent,
    type=st.sampled_from(["Created", "Updated", "Deleted", "Ünïcode-type"]),
    data=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    metadata=st.none() | st.dictionaries(st.text(max_size=5), json_scalars, max_size=2),
)
# an operation: append a group to a stream, save a snapshot of a stream, or reopen the store
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("append"),
            st.sampled_from(["a", "b", "c"]),
            st.lists(events, min_size=1, max_size=4),
        ),
        st.tuples(st.just("snapshot"), st.sampled_from(["a", "b", "c"])),
        st.tuples(st.just("reopen")),
    ),
    max_size=25,
)


def evolve(state: dict[str, Any], e: RecordedEvent | NewEvent) -> dict[str, Any]:
    """A fold that keeps everything it is given, so any difference shows."""
    meta = e.metadata or {}
    return {"n": state["n"] + 1, "log": [*state["log"], [e.type, e.data, meta]]}


def initial() -> dict[str, Any]:
    return {"n": 0, "log": []}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations, segment_bytes=st.sampled_from([1, 300, 1 << 20]))
def test_replay_snapshot_plus_tail_equals_full_replay_equals_live(ops, segment_bytes):
    with tempfile.TemporaryDirectory() as d:
        store = EventStore.open(d, fsync=False, segment_bytes=segment_bytes)
        live: dict[str, dict[str, Any]] = {}
        try:
            for op in ops:
                if op[0] == "append":
                    _, sid, group = op
                    state = live.get(sid, initial())
                    assert store.append(sid, group, state["n"]) == state["n"] + len(group)
                    for e in group:
                        state = evolve(state, e)
                    live[sid] = state
                elif op[0] == "snapshot" and op[1] in live:
                    store.save_snapshot(op[1], live[op[1]]["n"], live[op[1]])
                elif op[0] == "reopen":
                    store.close()
                    store = EventStore.open(d, fsync=False, segment_bytes=segment_bytes)
            for sid in ["a", "b", "c"]:
                full = initial()
                for e in store.read(sid):
                    full = evolve(full, e)
                snap = store.load_snapshot(sid)
                from_snap = initial() if snap is None else snap.state
                for e in store.read(sid, from_version=0 if snap is None else snap.version + 1):
                    from_snap = evolve(from_snap, e)
                assert full == from_snap == live.get(sid, initial())
                assert store.version(sid) == live.get(sid, initial())["n"]
            everything = store.read_all()
            assert [e.position for e in everything] == list(range(1, len(everything) + 1))
            assert sum(s["n"] for s in live.values()) == len(everything) == store.head()
        finally:
            store.close()
