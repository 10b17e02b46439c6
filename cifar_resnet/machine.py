"""The machine a result came from, as its record names it (imports nothing of the package)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """This machine's CPU as the kernel names it ('AMD EPYC', say), else platform's guess: a CPU result's record
    names it, since CPUs here differ twofold in speed."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
