"""Real subprocesses: racing writers, zombies, kill -9 at random moments (items 4, 5, 9)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from eventlog import EventStore, NewEvent, WrongExpectedVersion

CHILD = str(Path(__file__).with_name("eventlog_child.py"))


class Child:
    """A `serve` child: one command per line in, one answer per line out."""

    def __init__(self, root: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, CHILD, "serve", str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.readline() == "ready"

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def readline(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.send("exit")
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def test_two_processes_race_at_the_same_expected_version(log_dir):
    EventStore.open(log_dir).close()
    a, b = Child(log_dir), Child(log_dir)
    try:
        for r in range(25):
            stream = f"race-{r % 5}"
            expected = (r // 5) * 2  # groups of two: the stream's current version
            for c in (a, b):  # both commands are sent before either answer is read
                c.send(f"append {stream} {expected} 2")
            answers = sorted([a.readline(), b.readline()])
            # exactly one wins; the other is refused and told the winner's version
            assert answers == [f"ok {expected + 2}", f"wrong {expected + 2}"], answers
        with EventStore.open(log_dir) as s:
            for k in range(5):
                evs = s.read(f"race-{k}")
                assert [e.version for e in evs] == list(range(1, 11))
                assert [e.data["n"] for e in evs] == list(range(1, 11))
            assert [e.position for e in s.read_all()] == list(range(1, 51))
    finally:
        a.close()
        b.close()


def test_zombie_writer_in_another_process_is_refused(log_dir):
    EventStore.open(log_dir).close()
    old = Child(log_dir)
    try:
        old.send("append batch-7 0 2")
        assert old.readline() == "ok 2"
        with EventStore.open(log_dir) as new:  # the new incarnation
            assert new.append("batch-7", [NewEvent("T", {"n": 3})], 2) == 3
            old.send("append batch-7 2 1")  # the old one still thinks it is at version 2
            assert old.readline() == "wrong 3"
            assert [e.data["n"] for e in new.read("batch-7")] == [1, 2, 3]
            try:
                new.append("batch-7", [NewEvent("T", {})], 2)
                raise AssertionError("should have been refused")
            except WrongExpectedVersion:
                pass
    finally:
        old.close()


def _acknowledged(out: str) -> list[int]:
    acks = []
    for line in out.splitlines():
        if line.strip().isdigit():
            acks.append(int(line))
    return acks


def test_kill_9_writer_at_random_moments_100_times(log_dir):
    """A child appends and prints each acknowledged version; it is killed at random moments.

    Every acknowledged event must be there and none doubled. Meanwhile this process keeps a
    handle open and appends after every kill (so its catch-up meets the torn tails).
    """
    rng = random.Random(20240601)
    parent = EventStore.open(log_dir)
    acked_max = 0
    parent_v = 0
    started = time.monotonic()
    try:
        for i in range(100):
            child = subprocess.Popen(
                [sys.executable, CHILD, "writer", str(log_dir), "victim", str(i)],
                stdout=subprocess.PIPE,
                text=True,
            )
            # from mid-start-up (open/recovery) to well into the appending
            time.sleep(rng.uniform(0.05, 0.45))
            os.kill(child.pid, signal.SIGKILL)
            out, _ = child.communicate()
            assert child.returncode == -signal.SIGKILL
            acks = _acknowledged(out)
            assert acks == sorted(acks)
            if acks:
                acked_max = max(acked_max, acks[-1])
            # every acknowledged version is there, nothing doubled, gapless
            v = parent.version("victim")
            assert v >= acked_max, (i, v, acked_max)
            evs = parent.read("victim")
            assert [e.version for e in evs] == list(range(1, v + 1))
            assert [e.data["n"] for e in evs] == list(range(1, v + 1))
            parent_v = parent.append("parent", [NewEvent("T", {"i": i})], parent_v)
        assert acked_max > 100  # the children really got to write
        assert time.monotonic() - started < 120
    finally:
        parent.close()
    with EventStore.open(log_dir) as s:
        positions = [e.position for e in s.read_all()]
        assert positions == list(range(1, len(positions) + 1))
        assert s.version("victim") >= acked_max and s.version("parent") == 100
