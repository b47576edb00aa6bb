"""``npipes.wait``: wait on many connections and listeners at once (sync).

The names are ``multiprocessing.connection``'s. Readiness is decided here, once,
for :func:`wait` and ``Connection.poll``: a connection is ready when ``recv()``
would not block (a whole decoded message, the end of the stream, an error, or
closed), a listener when ``accept()`` would find a client (or it is closed).

Strategy: check every object without blocking; if none is ready, let the
backend wait until one *may* be ready (``selectors`` on POSIX; overlapped
zero-byte reads and ``ConnectNamedPipe`` with ``WaitForMultipleObjects`` on
Windows), then check again. A check reads what has arrived into the
connection core under the receive lock, so a partial frame makes nothing
ready and nothing read is lost: the next ``recv`` decodes it. A connection
whose receive lock another thread holds is not watched (that thread takes
what arrives); it is looked at again every ``_BUSY_SLICE`` seconds.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from typing import Final, overload

from . import _backend
from ._backend import WaitableListener, WaitableStream
from ._deadline import Deadline
from ._protocol import State
from .connection import Connection, Listener
from .errors import NpipesError

__all__ = ["wait"]

_BUSY_SLICE: Final = 0.05
"""Seconds between looks at a connection whose receive lock another thread holds."""

_IDLE_SLICE: Final = 1.0
"""Seconds between looks at everything when no other thread waits (see ``_wait``)."""

_active_waits = 0
"""wait() calls running in this process (one may drain what another watches)."""
_active_lock = threading.Lock()


@overload
def wait(objects: Iterable[Connection], timeout: float | None = None) -> list[Connection]: ...
@overload
def wait(objects: Iterable[Listener], timeout: float | None = None) -> list[Listener]: ...
@overload
def wait(
    objects: Iterable[Connection | Listener], timeout: float | None = None
) -> list[Connection | Listener]: ...


def wait(
    objects: Iterable[Connection | Listener], timeout: float | None = None
) -> list[Connection] | list[Listener] | list[Connection | Listener]:
    """Wait until some of ``objects`` are ready; return those, in input order.

    A :class:`Connection` is ready when ``recv()`` would return without
    blocking: a whole message arrived (or is already decoded, say left by
    ``recv_many``), the peer closed, an error is to be reported, or it is
    closed. A :class:`Listener` is ready when a client waits for ``accept()``
    (kept for it: no client is lost), or when it is closed.

    Args:
        objects: connections and listeners, mixed, any iterable.
        timeout: seconds to wait, None to wait for ever, 0 to poll.
    Returns:
        The ready subset, ``[]`` if the timeout passed first (at once for no objects).
    Raises:
        TypeError: an object is neither a Connection nor a Listener, or a FIFO
            connection (``npipes.fifo``), which cannot be waited on.

    On Windows an ``accept()`` in another thread on a listener being waited
    on waits until this wait returns. A connection whose ``recv`` runs in
    another thread is looked at every 50 ms, and so is everything while
    waits run in several threads (one may read into a connection what the
    other watches). Wait and receive in one thread for the prompt path.
    """
    items = list(objects)
    for item in items:
        _check_type(item)
    deadline = Deadline(timeout)
    if not items:
        return []  # nothing can become ready: do not sleep for ever
    global _active_waits
    with _active_lock:
        _active_waits += 1
    try:
        return _wait(items, deadline)
    finally:
        with _active_lock:
            _active_waits -= 1


def _wait(items: list[Connection | Listener], deadline: Deadline) -> list[Connection | Listener]:
    while True:
        known: dict[int, bool | None] = {}  # an object listed twice is looked at once
        states = [
            known[id(item)] if id(item) in known else known.setdefault(id(item), _ready_now(item))
            for item in items
        ]
        ready = [item for item, state in zip(items, states, strict=True) if state]
        if ready or deadline.expired():
            return ready
        watch = list(  # each once: a second zero-byte read or accept on one pipe must not start
            {
                id(item): _raw(item) for item, s in zip(items, states, strict=True) if s is False
            }.values()
        )
        # Busy in another thread, or a wait in another thread may move what arrives
        # into a core (the socket or pipe is quiet then, though a message is in): look
        # again soon. Alone, look again every _IDLE_SLICE anyway, in case a wait
        # started just after this one decided.
        concurrent = None in states or _active_waits > 1
        left = deadline.remaining()
        slice_ = _BUSY_SLICE if concurrent else _IDLE_SLICE
        step = Deadline(slice_ if left is None else min(left, slice_))
        _backend.wait_any(watch, step)


def _check_type(item: object) -> None:
    if isinstance(item, Connection):
        if not isinstance(item._stream, WaitableStream):
            raise TypeError(
                f"npipes.wait cannot watch {item!r}: a FIFO connection has no pollable"
                " stream; use a connection from npipes.connect or Listener.accept"
            )
    elif not isinstance(item, Listener):
        raise TypeError(
            "npipes.wait takes npipes.Connection and npipes.Listener objects,"
            f" not {type(item).__name__}"
        )


def _raw(item: Connection | Listener) -> WaitableStream | WaitableListener:
    raw = item._stream if isinstance(item, Connection) else item._raw
    assert isinstance(raw, WaitableStream | WaitableListener), "checked by _check_type"
    return raw


def _ready_now(item: Connection | Listener) -> bool | None:
    """Ready now (True), not yet (False), or busy in another thread (None)."""
    if isinstance(item, Listener):
        if item.closed:
            return True
        raw = item._raw
        assert isinstance(raw, WaitableListener), "checked by _check_type"
        return raw.client_waiting()
    return connection_ready(item)


def connection_ready(conn: Connection) -> bool | None:
    """Whether ``conn.recv()`` would return at once; None if another thread receives.

    Reads what has arrived into the core without waiting (kept for ``recv``);
    an error from the stream goes through the core's rule and counts as ready.
    """
    lock = conn._recv_lock
    if not lock.acquire(blocking=False):
        return None
    try:
        core = conn._core
        if core.message_ready():
            return True
        stream = conn._stream
        assert isinstance(stream, WaitableStream), "checked by _check_type"
        while True:
            try:
                buffer = core.get_buffer()
                if core.state is not State.OPEN:
                    return True  # the decoder refused room: its error is queued
                count = stream.read_available(buffer)
            except NpipesError as exc:
                with contextlib.suppress(NpipesError):  # a replacement: recv reports it
                    conn._io_failed(exc, core.recv_failed)
                return True  # recv reports it (or meets it again)
            except BaseException as exc:  # Ctrl+C: keep what the read delivered
                conn._io_failed(exc, core.recv_failed)
                raise
            if count is None:
                return False
            core.buffer_updated(count, stream.message_end)
            if core.message_ready():
                return True
    finally:
        lock.release()
