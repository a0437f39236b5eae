"""What every benchmark records about the machine it ran on (docs/benchmarks.md names the
CPU beside each figure: machines here differ, AMD on some, Intel with AVX-512/AMX on others)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else what the platform says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"
