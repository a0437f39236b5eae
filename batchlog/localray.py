"""The local Ray that `batchlog serve` starts: only the processes batchlog uses.

`ray.init(address="local")` starts, besides GCS and the raylet, an API server
(`dashboard.py`; with `include_dashboard=False` it runs only Ray's usage-stats module),
the autoscaler's `monitor.py` (nothing to scale on one node) and `log_monitor.py`
(copies workers' stdout/stderr to the driver). batchlog uses none of them, and each is a
Python process of ~80-120 MiB RSS. `ray.init` has no switch for them, so they are
skipped by replacing the three `Node` start methods for the duration of `ray.init`
(Ray's own `ray start` has `--no-monitor` and `--include-log-monitor=false`; the API
server has no off switch at all). Usage stats and metrics collection are off too.

What stays, and why (docs/architecture.md, "Ray processes"): GCS and the raylet, and
the raylet's two agents (`DashboardAgent`, `RuntimeEnvAgent`): Ray 2.60's raylet
refuses to start without their commands ("Dashboard agent command must be non empty"),
waits for the port files they write, and exits when one of them exits.

Workers' log lines then stay in the session's `logs/worker-*.{out,err}` files;
`BATCHLOG_RAY_WORKER_LOGS=true` starts the log monitor again so they also appear in
serve's output.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("batchlog.localray")

# Set before Ray starts its processes (they inherit the environment); setdefault, so an
# operator who wants them can still say so.
QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage report, nothing to phone home
    "RAY_enable_metrics_collection": "0",  # no Prometheus metrics from workers
}

SKIPPED = ("start_api_server", "start_monitor")
LOG_MONITOR = "start_log_monitor"


def _skip(*_args: Any, **_kwargs: Any) -> None:
    return None


@contextlib.contextmanager
def without_side_processes(worker_logs: bool) -> Iterator[list[str]]:
    """Within: a `ray.init(address="local")` starts none of the skipped processes.
    Yields the names of the Node methods it replaced (empty if Ray has changed and they
    are not there: then Ray starts them, which costs memory, not correctness)."""
    from ray._private import node

    names = [*SKIPPED, *(() if worker_logs else (LOG_MONITOR,))]
    saved = {n: getattr(node.Node, n) for n in names if hasattr(node.Node, n)}
    if len(saved) < len(names):
        log.warning("this Ray lacks %s: its side processes start", set(names) - set(saved))
    try:
        for name in saved:
            setattr(node.Node, name, _skip)
        yield list(saved)
    finally:
        for name, method in saved.items():
            setattr(node.Node, name, method)


def quiet_environment() -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
