"""Does the embedded engine run on this machine? Asked once, before the first batch.

llama.cpp is built for a stated x86-64 baseline (the Makefile: AVX2, FMA, F16C, BMI2;
no AVX-512, no AMX). Two checks, each ending in one sentence a user can act on:

- ``missing_cpu_features``: the CPU lacks part of that baseline (read from
  /proc/cpuinfo, before anything is loaded);
- ``engine_selftest``: one tiny generation in a *child process*, so that an engine that
  dies (SIGILL from an instruction the CPU or the VM does not allow, a crash in the
  library) kills the child, not the replica, and the replica can say why instead of
  being restarted into the same death.
"""

from __future__ import annotations

import platform
import signal
import subprocess
import sys
from pathlib import Path

# What the Makefile builds llama.cpp for on x86-64 (cpuinfo flag names).
X86_BASELINE = ("avx", "avx2", "fma", "f16c", "bmi2")
REBUILD_HINT = (
    "rebuild llama.cpp for this CPU: rm .venv/.installed && make demo "
    "LLAMA_CMAKE_ARGS='-DGGML_NATIVE=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF "
    "-DGGML_AMX_BF16=OFF -DLLAVA_BUILD=OFF' (docs/embedded-engine.md)"
)

_CHILD = """
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=64, n_threads=1, n_threads_batch=1, verbose=False)
out = llm.create_completion("Hello", max_tokens=2, temperature=0)
assert out["usage"]["prompt_tokens"] > 0
"""


def missing_cpu_features(cpuinfo: str | None = None) -> list[str]:
    """The baseline features this x86-64 CPU lacks ([] elsewhere, or when unknown)."""
    if cpuinfo is None:
        if platform.machine() not in ("x86_64", "AMD64"):
            return []
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return [f for f in X86_BASELINE if f not in flags]
    return []


def engine_selftest(model_path: Path, timeout_s: float = 180.0) -> str | None:
    """None if one tiny generation worked in a child process, else why not (a sentence)."""
    missing = missing_cpu_features()
    if missing:
        return (
            f"this CPU lacks {', '.join(missing).upper()}, part of the x86-64 baseline "
            f"(AVX2, FMA, F16C, BMI2) batchlog builds llama.cpp for; {REBUILD_HINT}"
        )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(model_path)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return f"llama.cpp's self-test (2 tokens) did not finish in {timeout_s:.0f} s"
    return describe_exit(proc.returncode, proc.stderr)


def describe_exit(returncode: int, stderr: str) -> str | None:
    """A child's exit status as one sentence (None for success)."""
    if returncode == 0:
        return None
    if returncode < 0:
        sig = signal.Signals(-returncode)
        what = f"llama.cpp died with {sig.name} in its start-up self-test"
        if sig == signal.SIGILL:
            return (
                f"{what}: this build uses an instruction this CPU (or its VM) does not "
                f"allow, such as AVX-512 or AMX; {REBUILD_HINT}"
            )
        return f"{what}; see docs/embedded-engine.md"
    last = next((ln for ln in reversed(stderr.strip().splitlines()) if ln.strip()), "")
    return f"llama.cpp's start-up self-test failed (exit {returncode}): {last[-300:]}"
