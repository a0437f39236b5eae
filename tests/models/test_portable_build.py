"""The installed llama.cpp runs on the stated baseline CPU, not only on this one.

`qemu-x86_64 -cpu Haswell` runs a program as on an AVX2-only CPU (no AVX-512, no AMX):
an instruction beyond the baseline the Makefile builds for (docs/embedded-engine.md)
dies there with SIGILL, as it would on a user's machine. A native build of llama.cpp on
an AVX-512 machine fails this test; the portable one passes. `.ci/run` installs
qemu-user, so CI never skips it.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys

import pytest

from actors.local import default_gguf_path
from actors.local.selftest import _CHILD, describe_exit

pytestmark = [pytest.mark.models, pytest.mark.timeout(900)]


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the baseline is for x86-64")
def test_the_engine_generates_on_an_avx2_only_cpu() -> None:
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        pytest.skip("qemu-user is not installed (.ci/run installs it)")
    proc = subprocess.run(
        [qemu, "-cpu", "Haswell", sys.executable, "-c", _CHILD, str(default_gguf_path())],
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert proc.returncode == 0, describe_exit(proc.returncode, proc.stderr)
