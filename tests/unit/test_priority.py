"""actors/priority.py in a real process: every thread, those started before and after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import json, os, sys, threading
from actors.priority import lower_priority
stop = threading.Event()
before = threading.Thread(target=stop.wait)
before.start()
lower_priority(int(sys.argv[1]))
lower_priority(int(sys.argv[1]))  # once per process: the second call changes nothing
after = threading.Thread(target=stop.wait)
after.start()
nice = {t: os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir("/proc/self/task")}
stop.set()
print(json.dumps({"threads": len(nice), "nice": sorted(set(nice.values()))}))
"""


def child_nice(steps: int) -> dict[str, object]:
    base = subprocess.run(
        [sys.executable, "-c", "import os; print(os.nice(0))"], capture_output=True, text=True
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(steps)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return {"base": int(base.stdout), **json.loads(out.stdout)}


def test_every_thread_is_made_nicer_once() -> None:
    got = child_nice(3)
    assert got["threads"] == 3
    assert got["nice"] == [min(19, int(str(got["base"])) + 3)]


def test_zero_steps_leave_the_process_alone() -> None:
    got = child_nice(0)
    assert got["nice"] == [got["base"]]
