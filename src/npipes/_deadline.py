"""One time budget shared by every blocking step of an operation.

A ``recv(timeout=5)`` may take several reads; each read gets what is left of
the same 5 s, so a peer that dribbles bytes cannot stretch the wait.
"""

from __future__ import annotations

import math
import time
from typing import Final, final

__all__ = ["NO_DEADLINE", "Deadline"]


@final
class Deadline:
    """A point in time (``time.monotonic``) by which an operation must finish.

    Args:
        timeout: seconds from now, or None for no deadline.
    """

    __slots__ = ("_end", "timeout")

    def __init__(self, timeout: float | None) -> None:
        if timeout is not None and (math.isnan(timeout) or timeout < 0):
            raise ValueError(f"timeout must be None or >= 0 seconds, not {timeout!r}")
        self.timeout: Final = timeout
        self._end = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        """Seconds left (never negative), or None without a deadline."""
        if self._end is None:
            return None
        return max(0.0, self._end - time.monotonic())

    def remaining_ms(self) -> int:
        """Milliseconds left, rounded up, or -1 without a deadline (poll()'s 'forever')."""
        left = self.remaining()
        if left is None:
            return -1
        return math.ceil(left * 1000)

    def expired(self) -> bool:
        """True once the deadline has passed."""
        return self._end is not None and time.monotonic() >= self._end


NO_DEADLINE: Final = Deadline(None)
"""The shared deadline of calls without a timeout (a Deadline never changes)."""
