"""Helpers for tests that need real peer processes."""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.process
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
