"""A real multi-node Ray cluster on this machine, for tests: a head and worker nodes
started with the `ray start` CLI (each its own raylet), stopped by PID, never `ray stop`.

Every node runs `ray start --block` as a child of this process, so each node's
processes (raylet, workers) are that child's descendants: `kill_node` SIGKILLs exactly
one node's raylet and its workers, as if that machine had died.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from batches.testing.pgserver import free_port


def _ray_bin() -> str:
    import sys

    return str(Path(sys.executable).with_name("ray"))


class RayCluster:
    def __init__(self) -> None:
        # short path: Ray's unix socket names must fit in 107 bytes
        self.temp = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}
        # token auth, as a real deployment should have it: every node and every driver
        # (pass `env` to them) reads this cluster's own token
        token = self.temp / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        self.env = {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token),
            "RAY_USAGE_STATS_ENABLED": "0",
            # a node's registration with the head may take longer than Ray's 30 s on a
            # loaded machine (CI saw `ray start` give up): a start-up limit, not a test
            "RAY_raylet_start_wait_time_s": "120",
        }

    def _start(self, name: str, args: list[str]) -> None:
        log = open(self.temp / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        ports = [
            "--node-manager-port", str(free_port()),
            "--object-manager-port", str(free_port()),
            "--dashboard-agent-grpc-port", str(free_port()),
            "--dashboard-agent-listen-port", str(free_port()),
            "--metrics-export-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()),
        ]  # fmt: skip
        env = {**os.environ, **self.env}
        self.nodes[name] = subprocess.Popen(
            [_ray_bin(), "start", "--block", "--node-ip-address=127.0.0.1", *ports, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def start_head(
        self,
        num_cpus: int = 1,
        resources: dict[str, float] | None = None,
        dashboard: bool = False,
    ) -> None:
        """The head; with ``dashboard``, its job server too (for `ray job submit`, at
        ``dashboard_url``)."""
        self.dashboard_url = f"http://127.0.0.1:{free_port()}"
        extra = (
            ["--include-dashboard=true", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={self.dashboard_url.rsplit(':', 1)[1]}"]
            if dashboard else ["--include-dashboard=false"]
        )  # fmt: skip
        self._start(
            "head",
            [
                "--head",
                f"--port={self.port}",
                f"--num-cpus={num_cpus}",
                f"--resources={json.dumps(resources or {})}",
                f"--temp-dir={self.temp}",
                "--disable-usage-stats",
                *extra,
            ],
        )
        self.wait_nodes(1)

    def add_worker(
        self, name: str, num_cpus: int = 1, resources: dict[str, float] | None = None
    ) -> None:
        self._start(
            name,
            [
                f"--address={self.address}",
                f"--num-cpus={num_cpus}",
                f"--resources={json.dumps(resources or {})}",
            ],
        )
        self.wait_nodes(len(self.nodes))

    def alive_nodes(self) -> int:
        """Active nodes, as `ray status` reports them (0 while the head is not up)."""
        out = subprocess.run(
            [_ray_bin(), "status", "--address", self.address],
            capture_output=True, text=True, check=False, env={**os.environ, **self.env},
        ).stdout  # fmt: skip
        active = out.split("Active:", 1)[-1].split("Pending:", 1)[0] if "Active:" in out else ""
        return sum(1 for line in active.splitlines() if line.strip().startswith("1 node_"))

    def wait_nodes(self, n: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout  # a start-up limit, not an assertion
        while self.alive_nodes() < n:
            for name, p in self.nodes.items():
                if p.poll() is not None:
                    raise RuntimeError(f"ray node {name} exited: {self.log(name)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n} nodes not up: {self.log('head')}")
            time.sleep(0.5)

    def log(self, name: str) -> str:
        p = self.temp / f"{name}.log"
        return p.read_text(errors="replace")[-3000:] if p.exists() else ""

    def node_pids(self, name: str) -> list[int]:
        """The node's processes: `ray start --block` and all its descendants."""
        try:
            root = psutil.Process(self.nodes[name].pid)
            return [root.pid, *(c.pid for c in root.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def kill_node(self, name: str) -> None:
        """SIGKILL the node's raylet and every process under it (its workers)."""
        root = psutil.Process(self.nodes[name].pid)
        procs = root.children(recursive=True)
        for p in procs:  # the raylet and its workers first, then the `ray start`
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        root.send_signal(signal.SIGKILL)
        self.nodes[name].wait()

    def stop(self) -> None:
        """Workers, then the head: SIGTERM each `ray start --block` (it stops its node),
        SIGKILL what is left under it."""
        for name in [n for n in self.nodes if n != "head"] + ["head"]:
            p = self.nodes.get(name)
            if p is None or p.poll() is not None:
                continue
            left = self.node_pids(name)
            p.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(30)
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.nodes.clear()
        shutil.rmtree(self.temp, ignore_errors=True)

    def __enter__(self) -> RayCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
