"""Hardening (issue 10): what reaches the server before auth, slow clients, DNS
rebinding, Ray's token, file modes, /health, orphan files. Real `batchlog serve`
subprocesses, real sockets: a raw socket shows what the server answers before the
client has sent its body."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from batches.testing import FakeUpstream, Service, free_port
from tests.e2e.conftest import FAST_RETRIES, chat_lines, upload, wait_for

pytestmark = pytest.mark.e2e

KEY = "key-alice"
LIMIT = 256 * 1024
BIG = 30 * 2**20  # the 30 MB upload of the issue
BODY_TIMEOUT_S = 2
MAX_INFLIGHT = 4
ORPHAN = "file-orphan000000000000000000"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """Keys, a keyed upstream, small limits, a short body timeout, its own Ray token
    file, and an orphan content file (as a failed registration leaves) made before start."""
    root = tmp_path_factory.mktemp("hard")
    data = root / "data"
    (data / "files").mkdir(parents=True)
    for name in (ORPHAN, "file-half.tmp"):
        (data / "files" / name).write_bytes(b"left behind\n")
        old = time.time() - 7200
        os.utime(data / "files" / name, (old, old))
    with FakeUpstream(api_key="upstream-secret") as up:
        env = {
            "BATCHLOG_UPSTREAM": up.url,
            "BATCHLOG_UPSTREAM_API_KEY": "upstream-secret",
            "BATCHLOG_API_KEYS": f"{KEY}:alice",
            "BATCHLOG_MAX_FILE_BYTES": str(LIMIT),
            "BATCHLOG_MAX_INFLIGHT_REQUESTS": str(MAX_INFLIGHT),
            "BATCHLOG_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
            "BATCHLOG_BODY_MIN_BYTES_PER_S": "1024",
            "RAY_AUTH_TOKEN_PATH": str(root / "ray" / "auth_token"),
            **FAST_RETRIES,
        }
        env.pop("RAY_AUTH_MODE", None)
        with Service(data, env, api_key=KEY) as svc:
            yield svc


def connect(port: int, timeout: float = 60.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "host: 127.0.0.1",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_of(sock: socket.socket) -> int:
    """The status line of the server's answer; a socket timeout fails the test (the
    server was still waiting for the body)."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed without an answer: {data!r}")
        data += chunk
    return int(data.split(b" ", 2)[1])


def upload_head(length: int | None, key: str = KEY) -> bytes:
    headers = {
        "authorization": f"Bearer {key}",
        "content-type": "multipart/form-data; boundary=XyZ",
    }
    if length is None:
        headers["transfer-encoding"] = "chunked"
    else:
        headers["content-length"] = str(length)
    return head("POST", "/v1/files", headers)


PART = (
    b'--XyZ\r\ncontent-disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
    b'--XyZ\r\ncontent-disposition: form-data; name="file"; filename="a.jsonl"\r\n'
    b"content-type: application/octet-stream\r\n\r\n"
)


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


# -- 2: nothing is read before auth and the size limit ---------------------------------


def test_wrong_key_is_refused_before_the_body_is_sent(secured: Service) -> None:
    with connect(secured.port) as sock:
        sock.sendall(upload_head(BIG, key="wrong"))
        assert status_of(sock) == 401


def test_declared_oversize_upload_is_refused_before_the_body(secured: Service) -> None:
    with connect(secured.port) as sock:
        sock.sendall(upload_head(BIG))
        assert status_of(sock) == 400


def test_streamed_upload_is_cut_off_at_the_limit(secured: Service) -> None:
    """No Content-Length: the limit is enforced as bytes arrive, not at the end."""
    files = secured.data_dir / "files"
    before = set(os.listdir(files))
    with connect(secured.port) as sock:
        sock.sendall(upload_head(None) + chunk(PART))
        for _ in range(LIMIT // 65536 + 2):
            sock.sendall(chunk(b"x" * 65535 + b"\n"))
        # The body is not finished (no closing boundary, no last chunk): an answer now
        # means the server refused while the upload was still coming in.
        assert status_of(sock) == 400
    assert set(os.listdir(files)) == before  # the partial file was removed


def test_sdk_upload_still_works(secured: Service) -> None:
    client = secured.client(max_retries=0)
    source = upload(client, chat_lines(3))
    batch = client.batches.create(
        input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_for(client, batch.id, {"completed", "failed"})
    # The upstream demands its key, which reaches the executor through the 0600
    # secrets file, not as an actor argument.
    assert done.status == "completed" and done.request_counts.completed == 3, done


# -- 5: slow clients ------------------------------------------------------------------


def test_unauthenticated_slow_uploads_hold_no_slot(secured: Service) -> None:
    socks = [connect(secured.port) for _ in range(MAX_INFLIGHT + 2)]
    try:
        for sock in socks:
            sock.sendall(upload_head(BIG, key="wrong") + b"-")
        for sock in socks:
            assert status_of(sock) == 401
        response = httpx.get(f"{secured.url}/batches", headers={"authorization": f"Bearer {KEY}"})
        assert response.status_code == 200, response.text
    finally:
        for sock in socks:
            sock.close()


def test_slow_authenticated_uploads_are_cut_off(secured: Service) -> None:
    """Uploads at a trickle fill every slot, then get 408 and free them."""
    socks = [connect(secured.port) for _ in range(MAX_INFLIGHT + 2)]
    try:
        for sock in socks:
            sock.sendall(upload_head(None) + chunk(PART))
        answered: dict[int, int] = {}
        deadline = time.monotonic() + 60
        while len(answered) < len(socks) and time.monotonic() < deadline:
            for i, sock in enumerate(socks):
                if i in answered:
                    continue
                try:
                    sock.sendall(chunk(b"x"))
                    sock.settimeout(0.05)
                    answered[i] = status_of(sock)
                except (TimeoutError, BlockingIOError):
                    pass
                except OSError:
                    answered[i] = -1  # closed by the server after its answer
            time.sleep(0.5)
        assert answered and set(answered.values()) <= {408, 503, -1}, answered
        assert 408 in answered.values(), answered
        response = httpx.get(f"{secured.url}/batches", headers={"authorization": f"Bearer {KEY}"})
        assert response.status_code == 200, response.text
    finally:
        for sock in socks:
            sock.close()


# -- 8: DNS rebinding -------------------------------------------------------------------


def test_foreign_host_and_plain_text_bodies_are_refused(secured: Service) -> None:
    auth = {"authorization": f"Bearer {KEY}"}
    url = f"http://127.0.0.1:{secured.port}/v1/batches"
    assert httpx.get(url, headers={**auth, "host": "evil.example:80"}).status_code == 400
    assert httpx.get(url, headers={**auth, "host": f"localhost:{secured.port}"}).status_code == 200
    body = '{"input_file_id": "file-x", "endpoint": "/v1/chat/completions", "completion_window": "24h"}'
    plain = httpx.post(url, content=body, headers={**auth, "content-type": "text/plain"})
    assert plain.status_code == 415, plain.text
    assert plain.json()["error"]["code"] == "unsupported_media_type"


def run_serve(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    """`batchlog serve` that is expected to refuse to start (killed if it does start)."""
    full = {**os.environ, **env}
    cmd = [sys.executable, "-m", "batchlog.cli", "serve", *args]
    proc = subprocess.Popen(
        cmd, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        pytest.fail(f"batchlog serve started when it should have refused:\n{out.decode()[-2000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out.decode(errors="replace"))


def test_open_non_loopback_bind_is_refused(tmp_path: Path) -> None:
    result = run_serve(
        {"BATCHLOG_DATA_DIR": str(tmp_path / "d"), "BATCHLOG_API_KEYS": ""},
        "--host",
        "0.0.0.0",
        "--port",
        str(free_port()),
    )
    assert result.returncode != 0 and "without API keys" in result.stdout, result.stdout


# -- 4: Ray's token -----------------------------------------------------------------------


def test_local_ray_without_token_auth_is_refused(tmp_path: Path) -> None:
    result = run_serve(
        {"BATCHLOG_DATA_DIR": str(tmp_path / "d"), "RAY_AUTH_MODE": "disabled"},
        "--port",
        str(free_port()),
    )
    assert result.returncode != 0 and "token" in result.stdout, result.stdout


def test_ray_token_is_owner_only(secured: Service) -> None:
    token = Path(secured.extra_env["RAY_AUTH_TOKEN_PATH"])
    assert stat.S_IMODE(token.stat().st_mode) == 0o600


# -- 9: modes, /health, orphans ---------------------------------------------------------------


def test_data_dir_and_files_are_owner_only(secured: Service) -> None:
    upload(secured.client(), chat_lines(1))
    data = secured.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "secrets.json").stat().st_mode) == 0o600
    for path in [*(data / "files").iterdir(), *(data / "log").rglob("*")]:
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_health_without_a_key_says_only_the_status(secured: Service) -> None:
    base = f"http://127.0.0.1:{secured.port}/health"
    anonymous = httpx.get(base)
    assert anonymous.status_code == 200 and anonymous.json() == {"status": "ok"}
    keyed = httpx.get(base, headers={"authorization": f"Bearer {KEY}"}).json()
    assert keyed["status"] == "ok" and "running" in keyed


def test_orphan_content_files_are_swept_at_start(secured: Service) -> None:
    left = set(os.listdir(secured.data_dir / "files"))
    assert ORPHAN not in left and "file-half.tmp" not in left
