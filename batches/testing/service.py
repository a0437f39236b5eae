"""Runs `batchlog serve` as a subprocess on 127.0.0.1: for the demo, tests and benchmarks.

The service starts its own local Ray; it and every process it starts share one new
session, so `kill()` ends all of them with SIGKILL and nothing else on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# When set, every boot of `batchlog serve` through this harness appends one JSON line
# (test id, seconds to healthy) to this file; tests/conftest.py sets it and counts them.
BOOT_LOG_ENV = "BATCHLOG_TEST_BOOT_LOG"


def _record_boot(data_dir: Path, seconds: float, event: str = "boot") -> None:
    path = os.environ.get(BOOT_LOG_ENV)
    if not path:
        return
    line = {
        "event": event,
        "test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0],
        "data_dir": str(data_dir),
        "seconds": round(seconds, 2),
    }
    with open(path, "a") as f:  # one short write per line: safe across xdist workers
        f.write(json.dumps(line) + "\n")


class PortTaken(RuntimeError):
    """Another process bound the port between our pick and serve's bind."""


class Service:
    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        api_key: str = "none",
        port: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.extra_env = env or {}
        self.api_key = api_key
        self.port = port or free_port()
        self._port_chosen_here = port is None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"serve-{data_dir.name}-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120.0) -> Service:
        # A port picked free can be taken before serve binds it: serve starts Ray first,
        # whose processes bind random ports. Then try another one (if we picked it).
        for _ in range(3):
            try:
                return self._start(timeout)
            except PortTaken:
                if not self._port_chosen_here:
                    raise
                self.port = free_port()
        return self._start(timeout)

    def _start(self, timeout: float) -> Service:
        env = {**os.environ, **self.extra_env}
        env.update(BATCHLOG_PORT=str(self.port), BATCHLOG_DATA_DIR=str(self.data_dir))
        env.setdefault("BATCHLOG_RAY_NUM_CPUS", "2")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "batchlog.cli", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._reap_session(self.proc.pid)
                log_text = self.log()
                self.proc = None
                if f"('127.0.0.1', {self.port}): address already in use" in log_text:
                    raise PortTaken(self.port)
                raise RuntimeError(f"batchlog serve exited:\n{log_text}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    _record_boot(self.data_dir, time.monotonic() - started)
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.kill()
        raise TimeoutError(f"batchlog serve did not come up:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-8000:] if self.log_path.exists() else ""

    def client(self, api_key: str | None = None, **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key=api_key or self.api_key, **kwargs)

    def kill(self) -> None:
        """SIGKILL the server and every process of its session (its Ray included)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._reap_session(self.proc.pid)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL whatever of the session is left."""
        if self.proc is None:
            return
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        self.kill()
        _record_boot(self.data_dir, time.monotonic() - started, "stop")

    @staticmethod
    def _reap_session(sid: int) -> None:
        """Ray may re-parent its processes; kill any left in the session."""
        for _ in range(50):
            left = [p for p in _session_pids(sid) if p != os.getpid()]
            if not left:
                return
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def pids(self, pattern: str) -> list[int]:
        """Pids in the service's session whose command line contains `pattern`."""
        assert self.proc is not None
        out = []
        for pid in _session_pids(self.proc.pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if pattern in cmd:
                out.append(pid)
        return out

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == sid:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids
