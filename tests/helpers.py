"""Helpers for tests that need real peer processes."""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.process
import sys
from collections.abc import Callable
from typing import Any

# spawn everywhere: the same on Linux and Windows, and no forked locks or sockets.
CTX = multiprocessing.get_context("spawn")


def start(target: Callable[..., Any], *args: Any) -> multiprocessing.process.BaseProcess:
    """Start ``target(*args)`` in a fresh Python process (target must live in a module)."""
    proc = CTX.Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def finish(proc: multiprocessing.process.BaseProcess, timeout: float = 60) -> int:
    """Wait for ``proc``; kill it if it hangs. Returns its exit code."""
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
        raise AssertionError(f"peer process {proc.pid} hung and was killed")
    code = proc.exitcode
    assert code is not None
    return code


def running_under_wine() -> bool:
    """True when this Windows Python runs under Wine (ntdll exports wine_get_version)."""
    if sys.platform != "win32":
        return False
    import ctypes

    try:
        ntdll = ctypes.WinDLL("ntdll")
        return hasattr(ntdll, "wine_get_version")
    except OSError:
        return False
