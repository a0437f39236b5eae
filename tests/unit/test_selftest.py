"""The engine's start-up checks say, in one sentence, why it cannot run here."""

from __future__ import annotations

import signal
import subprocess
import sys

from actors.local.selftest import REBUILD_HINT, describe_exit, missing_cpu_features

HASWELL = "flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c bmi1 bmi2 popcnt\n"
SANDY_BRIDGE = "processor\t: 0\nflags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx popcnt\n"


def test_baseline_features_are_read_from_cpuinfo() -> None:
    assert missing_cpu_features(HASWELL) == []
    assert missing_cpu_features(SANDY_BRIDGE) == ["avx2", "fma", "f16c", "bmi2"]
    assert missing_cpu_features("no flags line here") == []


def test_a_child_killed_by_sigill_is_named_with_what_to_do() -> None:
    # a real child process dying of SIGILL, as llama.cpp does on an AMX instruction
    proc = subprocess.run(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == -signal.SIGILL
    why = describe_exit(proc.returncode, proc.stderr)
    assert why is not None
    assert "SIGILL" in why and "instruction" in why and REBUILD_HINT in why


def test_other_exits_are_described() -> None:
    assert describe_exit(0, "") is None
    why = describe_exit(1, "Traceback...\nValueError: Failed to load model from file: x\n")
    assert why is not None and "Failed to load model" in why and "exit 1" in why
    killed = describe_exit(-signal.SIGKILL, "")
    assert killed is not None and "SIGKILL" in killed
