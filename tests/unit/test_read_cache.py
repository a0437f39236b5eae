"""The façade's copies of Batch objects (docs/read-cache.md): the coordinator's change
journal, the core's answer to a change request on a real log, and the copies' rules
(tenant, read-your-writes, resets, bounds). The long poll over Ray: tests/e2e/test_read_cache.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batches.core.changes import ChangeJournal
from batches.core.readcache import BatchCopies
from batches.domain import decider
from batches.domain import events as ev
from eventlog import NewEvent
from tests.unit.test_core import World, make_batches, supervision


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.log.close()


# -- the journal ---------------------------------------------------------------------


def test_journal_lists_the_batches_changed_after_a_cursor() -> None:
    j = ChangeJournal(token="t1")
    assert j.since("t1", 0) == set()
    for batch_id in ["a", "a", "b", "a", "c"]:
        j.note(batch_id)
    assert j.seq == 5
    assert j.since("t1", 0) == {"a", "b", "c"}
    assert j.since("t1", 3) == {"a", "c"}
    assert j.since("t1", 5) == set()


def test_journal_refuses_a_cursor_it_cannot_read() -> None:
    j = ChangeJournal(capacity=2, token="t1")
    for batch_id in ["a", "b", "c"]:
        j.note(batch_id)
    assert j.since("t2", 3) is None  # another journal's (a restarted coordinator)
    assert j.since("t1", 4) is None  # from the future
    assert j.since("t1", 0) is None  # older than what is kept: "a" was dropped
    assert j.since("t1", 1) == {"b", "c"}
    assert not j.readable(None, 0) and j.readable("t1", 3)


# -- the core's answer ----------------------------------------------------------------


def test_core_answers_a_change_request_with_the_batches_others_changed(world: World) -> None:
    world.config = world.config.__class__(max_active_batches=1)
    core = world.core()
    a, b = make_batches(world, core, 2)
    sup = supervision(world, core)
    sup.start(orphan_grace_s=0)
    assert sup.admit() == [a]
    first = sup.batch_changes(None, 0)
    assert first["reset"] is True  # no cursor yet: start from here
    token, seq = first["token"], first["seq"]
    assert not sup.changed(token, seq)
    # The batch's actor (another writer) records its validation: the core has not seen it.
    state = core.model.batches[a]
    events = decider.decide(state, decider.RecordValidation(at=1, model="m", total=1))
    world.log.append(ev.batch_stream(a), [NewEvent(t, d) for t, d in events], state.version)
    assert sup.changed(token, seq)
    answer = sup.batch_changes(token, seq)
    assert answer["reset"] is False and answer["token"] == token
    assert answer["batches"] == [{"id": a, "tenant": "t", "batch": sup.get_batch("t", a)}]
    assert answer["batches"][0]["batch"]["status"] == "in_progress"
    token, seq = answer["token"], answer["seq"]
    # Leaving the running set is no event, but it is a change: a waiting batch has a
    # queue position, so it is sent as "do not copy" (None); b, admitted into the freed
    # slot (no event yet either), may be copied, without a queue position.
    sup.ended(a, RuntimeError("actor died"))
    assert sup.running.keys() == {b}
    answer = sup.batch_changes(token, seq)
    assert answer["batches"] == [
        {"id": a, "tenant": "t", "batch": None},
        {"id": b, "tenant": "t", "batch": sup.get_batch("t", b)},
    ]
    assert "queue_position" in sup.get_batch("t", a)
    assert "queue_position" not in answer["batches"][1]["batch"]
    token, seq = answer["token"], answer["seq"]
    # Another coordinator incarnation's journal cannot read this cursor.
    again = supervision(world, world.core()).batch_changes(token, seq)
    assert again["reset"] is True and again["token"] != token


# -- the copies -----------------------------------------------------------------------


def answer(token: str, seq: int, *changes: tuple[str, str, Any], reset: bool = False) -> Any:
    return {
        "token": token,
        "seq": seq,
        "reset": reset,
        "batches": [{"id": i, "tenant": t, "batch": b} for i, t, b in changes],
    }


def wire(batch_id: str, status: str) -> dict[str, Any]:
    return {"id": batch_id, "object": "batch", "status": status}


def test_copies_answer_their_tenant_only_while_following() -> None:
    c = BatchCopies()
    assert c.get("t", "a") is None and c.cursor() == (None, 0)
    c.apply(c.next_round(), answer("T", 3, ("a", "t", wire("a", "in_progress"))))
    assert c.cursor() == ("T", 3)
    assert c.get("t", "a") == wire("a", "in_progress")
    assert c.get("other", "a") is None  # the coordinator answers another tenant (404)
    copy = c.get("t", "a")
    assert copy is not None
    copy["status"] = "changed by a caller"
    assert c.get("t", "a") == wire("a", "in_progress")  # callers get their own dict
    c.apply(c.next_round(), answer("T", 4, ("a", "t", None)))  # waiting again: not copied
    assert c.get("t", "a") is None
    c.apply(c.next_round(), answer("T", 5, ("a", "t", wire("a", "completed"))))
    c.lost()  # the coordinator could not be asked: nothing is answered from copies
    assert c.get("t", "a") is None and c.cursor() == (None, 0)


def test_a_reset_drops_every_copy() -> None:
    c = BatchCopies()
    c.apply(c.next_round(), answer("T", 1, ("a", "t", wire("a", "in_progress"))))
    c.apply(c.next_round(), answer("U", 9, ("b", "t", wire("b", "in_progress")), reset=True))
    assert c.get("t", "a") is None and c.get("t", "b") is not None


def test_a_write_through_this_facade_is_never_answered_from_an_older_copy() -> None:
    c = BatchCopies()
    c.apply(c.next_round(), answer("T", 1, ("a", "t", wire("a", "in_progress"))))
    asked_before = c.next_round()  # in flight while the cancel is made
    c.written("a")  # the cancel returned
    assert c.get("t", "a") is None  # read through to the coordinator
    c.apply(asked_before, answer("T", 2, ("a", "t", wire("a", "in_progress"))))
    assert c.get("t", "a") is None  # that answer may predate the cancel: not taken
    c.apply(c.next_round(), answer("T", 3, ("a", "t", wire("a", "cancelling"))))
    assert c.get("t", "a") == wire("a", "cancelling")


def test_a_write_unseen_by_the_next_answer_reads_through_until_the_batch_changes() -> None:
    c = BatchCopies()
    c.apply(c.next_round(), answer("T", 1, ("a", "t", wire("a", "in_progress"))))
    c.written("a")
    c.apply(c.next_round(), answer("T", 2))  # the cancel was in an answer not taken
    assert c.get("t", "a") is None  # no copy: the coordinator answers
    c.apply(c.next_round(), answer("T", 3, ("a", "t", wire("a", "cancelled"))))
    assert c.get("t", "a") == wire("a", "cancelled")


def test_copies_are_bounded_least_recently_used_first() -> None:
    c = BatchCopies(capacity=2)
    c.apply(c.next_round(), answer("T", 2, ("a", "t", wire("a", "x")), ("b", "t", wire("b", "x"))))
    assert c.get("t", "a") is not None  # a is now the most recently used
    c.apply(c.next_round(), answer("T", 3, ("c", "t", wire("c", "x"))))
    assert len(c) == 2 and c.get("t", "b") is None
    assert c.get("t", "a") is not None and c.get("t", "c") is not None


def test_writes_while_not_following_leave_nothing_behind() -> None:
    """Creates with nobody polling: no change request can be stale, nothing is kept."""
    c = BatchCopies()
    for i in range(1000):
        c.written(f"b{i}")
    assert c._pinned == {}
    c.apply(c.next_round(), answer("T", 1, ("b1", "t", wire("b1", "validating")), reset=True))
    assert c.get("t", "b1") is not None
    c.written("b1")  # following now: pinned until a later answer
    c.lost()
    assert c._pinned == {} and c.get("t", "b1") is None
