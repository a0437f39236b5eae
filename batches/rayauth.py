"""Ray's token auth, turned on before Ray is imported (Ray reads RAY_AUTH_MODE then).

Ray's GCS, raylet and agents listen on every interface whatever `_node_ip_address`
says (seen on Linux with Ray 2.5x), so the token is the only barrier between the network and running
code in this deployment: a local Ray is never started without it (docs/security.md).
No ray import here.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from batches.settings import Settings

log = logging.getLogger("batchlog.rayauth")

AUTH_MODE = "RAY_AUTH_MODE"


class RayAuthRefused(RuntimeError):
    pass


def token_path() -> Path:
    """Where Ray looks for the token (its default: ~/.ray/auth_token)."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def ensure_token_file(path: Path) -> None:
    """Create the token readable by its owner only, or tighten an existing one.

    Ray writes it with the process umask (world-readable by default) if it makes it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_uid == os.getuid():
            path.chmod(0o600)
        return
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))  # what Ray itself generates: 256 random bits


def prepare(settings: Settings) -> None:
    """Call before `import ray`. A local Ray: token auth on, or refuse to start."""
    mode = os.environ.get(AUTH_MODE)
    if settings.ray_address is not None:
        if (mode or "").lower() != "token":
            log.warning(
                "joining Ray at %s with %s=%s: batchlog cannot tell whether that cluster "
                "authenticates; without token auth anyone who reaches its ports runs code",
                settings.ray_address,
                AUTH_MODE,
                mode,
            )
        return
    if mode is not None and mode.lower() != "token":
        raise RayAuthRefused(
            f"refusing to start a local Ray with {AUTH_MODE}={mode}: its ports listen on "
            f"every interface and token auth is their only protection (unset it, or set "
            f"{AUTH_MODE}=token)"
        )
    os.environ[AUTH_MODE] = "token"
    if not os.environ.get("RAY_AUTH_TOKEN"):
        ensure_token_file(token_path())
