"""The rules of ``connect(name, reconnect=True)``, shared by the sync and asyncio front ends.

Sans-I/O: which failures mean "the peer is gone" (reconnect), which attempts
are worth retrying, and the backoff between attempts. The front ends do the
waiting and swap the new stream in.

What reconnecting covers (docs/api.md, "Clients that survive a restart"): a
``send`` that did not complete is sent again on the new connection
(at-least-once); a ``request`` whose reply did not arrive is sent again too,
so request/reply is covered end to end. Not covered: a message that a ``send``
completed (handed to the OS) is lost if the peer dies before reading it, and
messages the old peer sent that this side had not received when a *send*
reconnected are dropped (a ``recv`` reconnects only after everything the old
peer sent was delivered).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from ._deadline import seconds
from ._protocol import State
from .errors import (
    ConnectionClosedError,
    PipeBusyError,
    PipeNotFoundError,
    PipeTimeoutError,
    SlowSubscriberError,
)

if TYPE_CHECKING:
    from ._deadline import Deadline
    from ._options import Settings
    from ._protocol import ConnectionCore

__all__ = [
    "FIRST_DELAY",
    "MAX_DELAY",
    "RETRY_ERRORS",
    "Backoff",
    "attempt_settings",
    "delays",
    "gave_up",
    "may_reconnect",
    "out_of_time",
    "peer_gone",
]

FIRST_DELAY: Final = 0.01
"""Seconds before the second connect attempt; doubled after each failure."""
MAX_DELAY: Final = 1.0
"""The longest pause between two connect attempts, in seconds."""

RETRY_ERRORS: Final = (PipeNotFoundError, PipeBusyError, ConnectionClosedError)
"""A connect attempt that failed with one of these is tried again (the listener
is not back yet, is busy, or went away again during the handshake). Anything
else (permissions, a wrong authkey, a bad name) is raised at once."""


def delays() -> Iterator[float]:
    """Pauses between connect attempts: 10 ms, doubling, at most 1 s."""
    delay = FIRST_DELAY
    while True:
        yield delay
        delay = min(delay * 2, MAX_DELAY)


class Backoff:
    """The pauses between one call's reconnects: the first is at once, each later
    one waits the next of :func:`delays` first, so a listener that accepts and
    drops every client at once gets a few reconnects a second, not a storm."""

    __slots__ = ("_delays",)

    def __init__(self) -> None:
        self._delays: Iterator[float] | None = None

    def pause(self) -> float:
        """Seconds to wait before this call's next reconnect."""
        if self._delays is None:
            self._delays = delays()
            return 0.0
        return next(self._delays)


def attempt_settings(settings: Settings) -> Settings:
    """The settings of one connect attempt: never ``wait_for_listener`` inside it.

    The reconnect loop waits for the listener itself (PipeNotFoundError is
    retried), between attempts, where ``close()`` can end the wait; an attempt
    that waited in the backend for the whole deadline would not see it.
    """
    return dataclasses.replace(settings, wait_for_listener=False)


def peer_gone(exc: BaseException) -> bool:
    """Whether ``exc`` says the peer is gone (or ended the connection): reconnect.

    A protocol error, a bad checksum, a message too large or a timeout never
    reconnects (the front end also remembers a connection such an error
    broke, whose later calls raise ConnectionClosedError). A subscription
    dropped for being slow is the publisher's decision, not a restart.
    """
    return isinstance(exc, ConnectionClosedError) and not isinstance(exc, SlowSubscriberError)


def may_reconnect(
    enabled: bool, closed_here: bool, core: ConnectionCore, exc: BaseException
) -> bool:
    """Whether a call that failed with ``exc`` on ``core`` reconnects and tries again.

    Only with ``reconnect=True``, never after this side's ``close()``, only when the
    peer is gone (:func:`peer_gone`), and never on a connection that an error other
    than the peer leaving broke (a protocol error, a send torn by a timeout or an
    interrupt): its later calls raise instead, on every thread or task, whichever
    call met the error first (a send waiting on the transport included).
    """
    if not (enabled and not closed_here and peer_gone(exc)):
        return False
    cause = core.broken_by
    return core.state is not State.BROKEN or (cause is not None and peer_gone(cause))


def out_of_time(deadline: Deadline, last: BaseException) -> PipeTimeoutError | None:
    """The error to raise instead of reconnecting when the call's deadline has passed
    (else None). Without this check a listener that accepts and drops every client made
    a call past its deadline reconnect again and again while the drop won the race
    against the timed-out read (88 reconnects in a 3 s call on a loaded machine)."""
    left = deadline.remaining()
    if left is not None and left <= 0:
        return gave_up(deadline.timeout, last)
    return None


def gave_up(timeout: float | None, last: BaseException | None) -> PipeTimeoutError:
    """The error when the listener did not come back within the call's timeout."""
    detail = f" (last attempt: {last})" if last is not None else ""
    return PipeTimeoutError(
        f"the peer went away and no listener came back within {seconds(timeout)}{detail};"
        " start the server, or pass a longer timeout (None waits as long as it takes)",
        timeout=timeout,
    )
