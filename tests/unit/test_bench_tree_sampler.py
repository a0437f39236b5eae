"""bench/bench_sidebyside.py's TreeSampler counts the CPU of children that are gone.

Real processes: a parent that waits for its child (the child's time lands in the
parent's reaped-children times) and a parent that ignores SIGCHLD, as Ray's raylet does
(the kernel reaps the child and adds its time to nobody: the child's last sample
counts). Both children burn a fixed amount of CPU, so the check is on CPU seconds, not
on wall time.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from bench.bench_sidebyside import TreeSampler

BURN_S = 0.5

# the child: burn BURN_S of CPU, say so, then wait for a line on stdin before exiting
CHILD = textwrap.dedent(
    f"""
    import sys, time
    t = time.process_time()
    while time.process_time() - t < {BURN_S}:
        pass
    print("burnt", flush=True)
    sys.stdin.readline()
    """
)

PARENT = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    if sys.argv[1] == "ignore":
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # as the raylet: no zombies, no wait
    child = subprocess.Popen([sys.executable, "-c", sys.argv[2]])  # inherits our stdin/stdout
    if sys.argv[1] == "wait":
        child.wait()
        print("reaped", flush=True)
    time.sleep(600)
    """
)


def _tree(root: psutil.Process) -> set[int]:
    try:
        return {root.pid} | {c.pid for c in root.children(recursive=True)}
    except psutil.Error:
        return set()


@pytest.mark.parametrize("mode", ["wait", "ignore"])
def test_a_gone_childs_cpu_is_counted(mode: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", PARENT, mode, CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        root = psutil.Process(proc.pid)
        sampler = TreeSampler(lambda: _tree(root), lambda cmd: "x")
        sampler.sample()
        before = sampler.cpu_total
        assert proc.stdout.readline().strip() == "burnt"
        sampler.sample()  # the child is seen alive, with its CPU spent
        child_pids = _tree(root) - {root.pid}
        assert len(child_pids) == 1
        proc.stdin.write("go\n")
        proc.stdin.flush()
        if mode == "wait":
            assert proc.stdout.readline().strip() == "reaped"
        else:
            (child,) = child_pids
            while psutil.pid_exists(child):  # reaped by the kernel
                time.sleep(0.02)
        sampler.sample()  # the child is gone
        assert sampler.cpu_total - before >= BURN_S * 0.9
        assert not (_tree(root) - {root.pid})
    finally:
        proc.kill()
        proc.wait(timeout=30)
