"""Optional CPU pinning (Linux), for steadier numbers on small or shared machines.

``one``: the driver and every server on one CPU (round trips then measure
software cost plus a context switch, without cross-CPU wake-ups, whose cost
varies a lot on virtual machines). ``two``: the driver on one CPU, the servers
on another. ``none`` (the default): wherever the OS puts them.
"""

from __future__ import annotations

import os
import sys
from typing import Final

__all__ = ["PINS", "pin", "plan"]

PINS: Final = ("none", "one", "two")


def plan(mode: str) -> tuple[frozenset[int] | None, frozenset[int] | None]:
    """``(driver CPUs, server CPUs)`` for ``mode``; None: leave as is."""
    if mode == "none":
        return None, None
    if sys.platform == "linux":
        cpus = sorted(os.sched_getaffinity(0))
        first = frozenset(cpus[:1])
        if mode == "one" or len(cpus) < 2:
            return first, first
        return first, frozenset(cpus[1:2])
    else:  # (an else: mypy then checks each branch on its platform only)
        return None, None


def pin(cpus: frozenset[int] | None) -> frozenset[int] | None:
    """Run this process on ``cpus``; return the CPUs it had (None if unchanged)."""
    if cpus is None:
        return None
    if sys.platform == "linux":
        before = frozenset(os.sched_getaffinity(0))
        os.sched_setaffinity(0, cpus)
        return before
    else:
        return None
