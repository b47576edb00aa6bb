"""Review of issue 12, ``npipes.wait`` on Windows: Ctrl+C at the edge of its overlapped operations.

``wait`` starts a zero-byte ``ReadFile`` on each connection and a
``ConnectNamedPipe`` on each listener. A Ctrl+C can land right after one of
them returned pending, before the wait recorded it: it must not leave that
operation pending (on a freed OVERLAPPED for the listener; on the stream's own
OVERLAPPED, which the next wait would issue again while still in use). A
profile hook raises it at exactly that point, as in tests/test_review_win_io.py:
the pipes and the signal are real; only the timing is pinned.
"""

from __future__ import annotations

import _thread
import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import npipes

pytestmark = pytest.mark.windows

WAIT = 30.0

if sys.platform == "win32":
    import win32file
    import win32pipe

    from npipes._backend import windows as backend


@contextlib.contextmanager
def _ctrl_c_after(function: Callable[..., Any]) -> Iterator[dict[str, Any]]:
    """Deliver Ctrl+C (once) the moment the C function ``function`` returns; yields a
    dict that then holds the caller's ``ov`` (the OVERLAPPED it issued the call with)."""
    fired = False
    seen: dict[str, Any] = {}

    def hook(frame: Any, event: str, arg: Any) -> None:
        nonlocal fired
        if event == "c_return" and arg is function and not fired:
            fired = True
            sys.setprofile(None)
            seen["ov"] = frame.f_locals.get("ov")  # kept alive: the test looks at it
            _thread.interrupt_main()

    sys.setprofile(hook)
    try:
        yield seen
    finally:
        sys.setprofile(None)
    assert fired, f"{function} was never called"


def _pending(handle: Any, ov: Any) -> bool:
    """Whether an operation with ``ov`` is pending on ``handle`` (it is cancelled if so).

    CancelIoEx with that OVERLAPPED succeeds only then (with NULL, Wine says yes always).
    """
    return backend._cancel_one(handle, ov)


def test_ctrl_c_right_after_wait_starts_its_zero_byte_read_leaves_none_pending(
    pipe_name: str,
) -> None:
    with npipes.listen(pipe_name) as listener:
        client = npipes.connect(pipe_name, timeout=WAIT)
        with client, listener.accept(timeout=WAIT) as server:
            with pytest.raises(KeyboardInterrupt), _ctrl_c_after(win32file.ReadFile) as seen:
                npipes.wait([server], timeout=WAIT)
            assert seen["ov"] is server._stream._wait_ov
            assert not _pending(server._stream._handle, seen["ov"]), "wait left its zero-byte read"
            client.send(b"after")
            assert npipes.wait([server], timeout=WAIT) == [server]
            assert server.recv(timeout=WAIT) == b"after"


def test_ctrl_c_right_after_wait_starts_its_connect_leaves_none_pending(pipe_name: str) -> None:
    with npipes.listen(pipe_name) as listener:
        raw = listener._raw
        handle = raw._pending
        with pytest.raises(KeyboardInterrupt), _ctrl_c_after(win32pipe.ConnectNamedPipe) as seen:
            npipes.wait([listener], timeout=WAIT)
        assert seen["ov"] is not None
        # Pending on an OVERLAPPED nobody keeps: the OS would write into freed memory.
        assert not _pending(handle, seen["ov"]), "wait left its ConnectNamedPipe pending"
        with npipes.connect(pipe_name, timeout=WAIT) as client:
            client.send(b"hello")
            assert npipes.wait([listener], timeout=WAIT) == [listener]
            with listener.accept(timeout=WAIT) as server:
                assert server.recv(timeout=WAIT) == b"hello"


@contextlib.contextmanager
def _ctrl_c_as_start_wait_returns() -> Iterator[None]:
    """Deliver Ctrl+C (once) as a ``start_wait`` returns the events of an operation it
    started: the moment before ``wait`` records it as started."""
    fired = False

    def hook(frame: Any, event: str, arg: Any) -> None:
        nonlocal fired
        if event == "return" and frame.f_code.co_name == "start_wait" and arg and not fired:
            fired = True
            sys.setprofile(None)
            _thread.interrupt_main()

    sys.setprofile(hook)
    try:
        yield
    finally:
        sys.setprofile(None)
    assert fired, "start_wait never started an operation"


def test_ctrl_c_as_wait_starts_watching_a_listener_leaves_accept_usable(pipe_name: str) -> None:
    listener = npipes.listen(pipe_name)
    raw = listener._raw
    with pytest.raises(KeyboardInterrupt), _ctrl_c_as_start_wait_returns():
        npipes.wait([listener], timeout=WAIT)
    # Held for ever, accept() and close() would never return (so no close() then).
    assert not raw._accept_lock.locked(), "wait kept the listener's accept lock"
    with listener, npipes.connect(pipe_name, timeout=WAIT) as client:
        client.send(b"hello")
        with listener.accept(timeout=WAIT) as server:
            assert server.recv(timeout=WAIT) == b"hello"


def test_ctrl_c_as_wait_starts_watching_a_connection_leaves_nothing_pending(
    pipe_name: str,
) -> None:
    with npipes.listen(pipe_name) as listener:
        client = npipes.connect(pipe_name, timeout=WAIT)
        with client, listener.accept(timeout=WAIT) as server:
            stream = server._stream
            with pytest.raises(KeyboardInterrupt), _ctrl_c_as_start_wait_returns():
                npipes.wait([server], timeout=WAIT)
            assert not stream._wait_lock.locked(), "wait kept the stream's wait lock"
            assert not _pending(stream._handle, stream._wait_ov), "wait left its zero-byte read"
            client.send(b"after")
            assert npipes.wait([server], timeout=WAIT) == [server]
            assert server.recv(timeout=WAIT) == b"after"
