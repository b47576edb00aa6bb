"""Where the numbers come from: OS, CPU, Python, Wine."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import npipes

__all__ = ["machine_info", "source_revision", "wine_version"]


def wine_version() -> str | None:
    """Wine's version when this Windows Python runs under Wine, else None."""
    if sys.platform == "win32":
        import ctypes

        try:
            get = ctypes.WinDLL("ntdll").wine_get_version
        except (AttributeError, OSError):
            return None
        get.restype = ctypes.c_char_p
        version: bytes = get()
        return version.decode()
    else:  # (an else: mypy then checks each branch on its platform only)
        return None


def _cpu_model() -> str:
    if sys.platform == "linux":
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                for line in f:
                    if line.startswith("model name"):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
    return platform.processor() or platform.machine()


def _memory_total() -> int | None:
    if sys.platform == "linux":
        try:
            with open("/proc/meminfo", encoding="utf-8") as f:
                for line in f:
                    if line.startswith("MemTotal:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
    return None


def source_revision() -> str | None:
    """``git describe --always --dirty`` of the npipes checkout being measured, if any."""
    root = Path(npipes.__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None  # no git here (e.g. Windows Python under Wine)
    return done.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    """A JSON-ready description of this machine and interpreter, with the date."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "system": platform.system(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_total": _memory_total(),
        "load_average": list(load) if load is not None else None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "compiler": platform.python_compiler(),
        "wine": wine_version(),
        "npipes": npipes.__version__,
        "npipes_revision": source_revision(),
    }
