"""This process's resident memory: now, and its peak so far."""

from __future__ import annotations

import os
import sys

__all__ = ["current_rss", "peak_rss", "reset_peak"]


def current_rss() -> int | None:
    """Resident set size now, in bytes (None where the OS does not tell cheaply)."""
    if sys.platform == "win32":
        return int(_win_memory_info()["WorkingSetSize"])
    else:  # (an else: mypy then checks each branch on its platform only)
        try:
            with open("/proc/self/statm", "rb") as f:  # Linux
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return None


def reset_peak() -> bool:
    """Linux: restart the peak (VmHWM) from the current RSS; False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _vm_hwm() -> int | None:
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss() -> int:
    """Peak resident set size of this process so far, in bytes.

    Linux: ``VmHWM``, the peak of this process image only (``ru_maxrss`` of a
    spawned child starts at its parent's RSS at spawn time). Windows:
    ``PeakWorkingSetSize``. Elsewhere ``ru_maxrss``.
    """
    if sys.platform == "win32":
        return int(_win_memory_info()["PeakWorkingSetSize"])
    else:
        hwm = _vm_hwm()
        if hwm is not None:
            return hwm
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # macOS: bytes; else KiB


if sys.platform == "win32":

    def _win_memory_info() -> dict[str, int]:
        import win32api
        import win32process

        info: dict[str, int] = win32process.GetProcessMemoryInfo(win32api.GetCurrentProcess())
        return info
