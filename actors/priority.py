"""Bulk work yields the CPU to API answers: batch actors and upstream executors run
`BATCHLOG_BULK_NICE` steps nicer than the process that started Ray.

On a busy node (a 10,000-request batch keeps 2 cores near full) a GET answered by
`serve` waits for a core behind the processes that push requests; with those niced, the
scheduler gives `serve` (and the coordinator) the core first. Measured on the
10,000-request run on a 2-core AMD EPYC, three interleaved rounds each
(docs/benchmarks.md): GET p99 22-39 ms with the façade's copies alone, 20-26 ms with the
bulk processes niced too. On Linux niceness belongs to each thread, and Ray has started
its threads before an actor's `__init__` runs, so every thread of the process is
reniced, once per process (a kept batch actor is constructed once).
"""

from __future__ import annotations

import contextlib
import os

_done = False


def lower_priority(steps: int) -> None:
    """Make this process's threads (now and those they start) `steps` nicer, once."""
    global _done
    if _done or steps <= 0:
        return
    _done = True
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # no procfs: the calling thread, and those it starts later
        with contextlib.suppress(OSError):
            os.nice(steps)
        return
    for tid in threads:
        with contextlib.suppress(OSError):  # a thread that just ended
            now = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(19, now + steps))
