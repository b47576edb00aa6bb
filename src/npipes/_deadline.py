"""One time budget shared by every blocking step of an operation.

A ``recv(timeout=5)`` may take several reads; each read gets what is left of
the same 5 s, so a peer that dribbles bytes cannot stretch the wait.

Timeouts of any size work: ``float("inf")`` and anything from ``FOREVER``
(about 31 years) up mean no deadline, and :meth:`Deadline.remaining_ms` never
returns more than ``poll()``/``WaitForSingleObject`` accept (a wait slice of
about 24.8 days; callers loop until :meth:`Deadline.expired`).
"""

from __future__ import annotations

import math
import time
from typing import Final, final

__all__ = ["FOREVER", "MAX_WAIT_MS", "NO_DEADLINE", "Deadline", "seconds"]

FOREVER: Final = 1e9
"""Timeouts from this many seconds up (about 31 years) are treated as no deadline."""
MAX_WAIT_MS: Final = 2**31 - 1
"""The longest single wait in ms that poll() and the Win32 waits accept (~24.8 days)."""


@final
class Deadline:
    """A point in time (``time.monotonic``) by which an operation must finish.

    Args:
        timeout: seconds from now, or None for no deadline.
    """

    __slots__ = ("_end", "timeout")

    def __init__(self, timeout: float | None) -> None:
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, int | float):
                raise TypeError(
                    f"timeout must be a number of seconds or None, not {type(timeout).__name__}"
                )
            if math.isnan(timeout) or timeout < 0:
                raise ValueError(f"timeout must be None or >= 0 seconds, not {timeout!r}")
            if timeout >= FOREVER:
                timeout = None  # inf, or longer than anyone waits: no deadline
        self.timeout: Final = timeout
        self._end = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        """Seconds left (never negative), or None without a deadline."""
        if self._end is None:
            return None
        return max(0.0, self._end - time.monotonic())

    def remaining_ms(self) -> int:
        """Milliseconds left, rounded up, or -1 without a deadline (poll()'s 'forever').

        At most :data:`MAX_WAIT_MS`: a wait that ends before :meth:`expired` is a
        slice of a longer deadline, and the caller waits again.
        """
        left = self.remaining()
        if left is None:
            return -1
        return min(math.ceil(left * 1000), MAX_WAIT_MS)

    def remaining_lock(self) -> float:
        """Seconds left in the form ``Lock.acquire(timeout=)`` takes (-1: no deadline)."""
        left = self.remaining()
        return -1 if left is None else left

    def expired(self) -> bool:
        """True once the deadline has passed."""
        return self._end is not None and time.monotonic() >= self._end


NO_DEADLINE: Final = Deadline(None)
"""The shared deadline of calls without a timeout (a Deadline never changes)."""


def seconds(value: float | None) -> str:
    """``value`` seconds for an error message: ``"1 s"``, ``"0.25 s"``, ``"120 s"``.

    Timeouts reach messages after arithmetic on deadlines (what is left of a
    caller's budget); a message says ``1 s``, not ``0.9999977959998887 s``.
    """
    if value is None:
        return "no time limit"
    if value >= 100:
        return f"{value:.0f} s"
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    if text == "0" and value > 0:
        text = f"{value:.1g}"  # a tiny positive budget still reads as one
    return f"{text} s"
