"""Corners of the Windows backend (``npipes._backend.windows``) on real named pipes.

The pipes, the peers (npipes' own ends, or raw pywin32 calls as the odd peer) and
the OS errors are real. Where a case needs something to happen at one exact point
(a Ctrl+C just before or after a Win32 call, a ``close`` from "another thread"
landing between two steps, a cancel from outside), a profile hook (or a
``sys.monitoring`` line event) does it at exactly that point, as in
tests/test_review_win_io.py: only the timing is pinned, never the I/O.
"""

from __future__ import annotations

import _thread
import contextlib
import inspect
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import npipes
from npipes._deadline import Deadline

pytestmark = pytest.mark.windows

WAIT = 10.0

if sys.platform == "win32":
    import pywintypes
    import win32file
    import win32pipe

    from npipes._backend import ListenOptions
    from npipes._backend import windows as backend
    from npipes._names import Address, resolve


# -- helpers --------------------------------------------------------------------


def _address(name: str) -> Address:
    return resolve(name, platform="win32")


def _listen(name: str) -> Any:
    return backend.listen(_address(name), ListenOptions())


def _connect(name: str) -> Any:
    return backend.connect(_address(name), Deadline(WAIT), wait_for_listener=True)


def _raw_client(path: str) -> Any:
    """A plain blocking client end in message read mode (the raw peer)."""
    handle = win32file.CreateFile(
        path,
        win32file.GENERIC_READ | win32file.GENERIC_WRITE,
        0,
        None,
        win32file.OPEN_EXISTING,
        0,
        None,
    )
    win32pipe.SetNamedPipeHandleState(handle, win32pipe.PIPE_READMODE_MESSAGE, None, None)
    return handle


def _recv(stream: Any, size: int = 64) -> bytes:
    buffer = bytearray(size)
    count = stream.recv_into(memoryview(buffer), Deadline(WAIT))
    return bytes(buffer[:count])


@contextlib.contextmanager
def _pair(name: str) -> Iterator[tuple[Any, Any, Any]]:
    """(listener, client stream, server stream), all closed afterwards."""
    listener = _listen(name)
    client = _connect(name)
    server = listener.accept(Deadline(WAIT))
    try:
        yield listener, client, server
    finally:
        client.close()
        server.close()
        listener.close()


def _name_is_free(name: str) -> None:
    """A new listener takes ``name``: nothing of an earlier one (claim, instance) is left."""
    _listen(name).close()


@contextlib.contextmanager
def _at_call(
    event: str, function: Callable[..., Any], action: Callable[[Any], None]
) -> Iterator[None]:
    """Run ``action(frame)`` once, at the ``event`` ("c_call" or "c_return") of the C
    function ``function`` in this thread; the frame is the caller's."""
    fired = False

    def hook(frame: Any, ev: str, arg: Any) -> None:
        nonlocal fired
        if ev == event and arg is function and not fired:
            fired = True
            sys.setprofile(None)
            action(frame)

    sys.setprofile(hook)
    try:
        yield
    finally:
        sys.setprofile(None)
    assert fired, f"{function} was never called"


def _ctrl_c(frame: Any) -> None:
    _thread.interrupt_main()  # delivered at once: the hook is Python code


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.005)


# -- streams --------------------------------------------------------------------


def test_read_available_and_wait_on_a_closed_stream(pipe_name: str) -> None:
    with _pair(pipe_name) as (_, client, server):
        server.close()
        with pytest.raises(npipes.ConnectionClosedError, match="connection was closed"):
            server.read_available(memoryview(bytearray(16)))
        # wait reports a closed stream as ready (its read then says closed) and holds nothing
        assert backend.wait_any([server], Deadline(WAIT)) == [0]
        assert not server._wait_lock.locked()
        assert client.recv_into(memoryview(bytearray(16)), Deadline(WAIT)) == 0  # peer: EOF


def test_wait_on_a_stream_whose_peer_left_is_ready_at_once(pipe_name: str) -> None:
    with _pair(pipe_name) as (_, client, server):
        client.close()
        started = time.monotonic()
        assert backend.wait_any([server], Deadline(WAIT)) == [0]
        assert time.monotonic() - started < WAIT / 2
        assert server.read_available(memoryview(bytearray(16))) == 0  # the end
        assert not server._wait_lock.locked()


def test_wait_with_bytes_already_in_returns_that_stream_and_keeps_the_bytes(
    pipe_name: str,
) -> None:
    # The listener's accept is started and then cancelled; the stream's zero-byte
    # read completes at once (the bytes are there) and consumes nothing.
    with _pair(pipe_name) as (listener, client, server):
        client.send([b"waiting"], Deadline(WAIT))
        assert backend.wait_any([listener, server], Deadline(WAIT)) == [1]
        assert not listener.client_waiting()
        assert server.read_available(memoryview(bytearray(64))) == len(b"waiting")
        # the listener still takes clients after its wait was ended
        with (
            contextlib.closing(_connect(pipe_name)) as second,
            contextlib.closing(listener.accept(Deadline(WAIT))) as other,
        ):
            second.send([b"two"], Deadline(WAIT))
            assert _recv(other) == b"two"


def test_read_available_never_takes_an_empty_pipe_message_for_the_end(pipe_name: str) -> None:
    # A raw peer writes a zero-length pipe message, then bytes. read_available must
    # never answer 0 (the end) for the empty message. It may answer "nothing yet" (None)
    # for the call that took only the empty message (its deadline is zero); the bytes
    # come with the next call at the latest.
    listener = _listen(pipe_name)
    raw = _raw_client(listener.address)
    try:
        server = listener.accept(Deadline(WAIT))
        with contextlib.closing(server):
            win32file.WriteFile(raw, b"")
            win32file.WriteFile(raw, b"data")
            buffer = bytearray(64)
            answers = [server.read_available(memoryview(buffer)) for _ in range(2)]
            assert answers in ([None, 4], [4, None]), answers  # never 0, the end
            assert bytes(buffer[:4]) == b"data"
            assert server.read_available(memoryview(buffer)) is None  # nothing more
    finally:
        raw.Close()
        listener.close()
    _name_is_free(pipe_name)


def test_close_landing_as_an_empty_message_is_read_says_closed(pipe_name: str) -> None:
    # recv reads on past a zero-length pipe message; a close from another thread
    # landing just as that read returned must end recv as closed, not read on.
    listener = _listen(pipe_name)
    raw = _raw_client(listener.address)
    try:
        server = listener.accept(Deadline(WAIT))
        win32file.WriteFile(raw, b"")
        with (
            pytest.raises(npipes.ConnectionClosedError, match="connection was closed"),
            _at_call("c_return", win32file.ReadFile, lambda frame: server.close()),
        ):
            server.recv_into(memoryview(bytearray(64)), Deadline(WAIT))
        with pytest.raises(pywintypes.error) as info:
            win32file.ReadFile(raw, 64)
        assert info.value.winerror == 109  # the peer sees the end (ERROR_BROKEN_PIPE)
    finally:
        raw.Close()
        listener.close()
    _name_is_free(pipe_name)


def test_close_landing_as_send_issues_its_write_says_closed(pipe_name: str) -> None:
    listener = _listen(pipe_name)
    raw = _raw_client(listener.address)
    try:
        server = listener.accept(Deadline(WAIT))
        with (
            pytest.raises(npipes.ConnectionClosedError, match="connection was closed"),
            _at_call("c_call", win32file.WriteFile, lambda frame: server.close()),
        ):
            server.send([b"never sent"], Deadline(WAIT))
        with pytest.raises(pywintypes.error) as info:
            win32file.ReadFile(raw, 64)
        assert info.value.winerror == 109  # nothing arrived: only the end
    finally:
        raw.Close()
        listener.close()
    _name_is_free(pipe_name)


def test_recv_and_read_available_on_a_handle_closed_underneath(pipe_name: str) -> None:
    # Misuse: the stream's handle is closed behind its back (PyHANDLE.Close zeroes it,
    # so no other handle is hit). Both reads fail typed, naming the cause.
    with _pair(pipe_name) as (_, client, server):
        client.handle.Close()
        for read in (
            lambda: client.recv_into(memoryview(bytearray(16)), Deadline(WAIT)),
            lambda: client.read_available(memoryview(bytearray(16))),
        ):
            with pytest.raises(npipes.ConnectionClosedError, match="ERROR_INVALID_HANDLE") as info:
                read()
            assert info.value.winerror == 6
        assert server.recv_into(memoryview(bytearray(16)), Deadline(WAIT)) == 0  # peer: EOF


def test_ctrl_c_before_wait_issues_its_zero_byte_read_leaves_none(pipe_name: str) -> None:
    with _pair(pipe_name) as (_, client, server):
        with pytest.raises(KeyboardInterrupt), _at_call("c_call", win32file.ReadFile, _ctrl_c):
            backend.wait_any([server], Deadline(WAIT))
        assert not server._wait_lock.locked()
        assert not backend._cancel_one(server.handle, server._wait_ov)  # nothing pending on it
        client.send([b"after"], Deadline(WAIT))
        assert backend.wait_any([server], Deadline(WAIT)) == [0]
        assert _recv(server) == b"after"


def test_wait_on_more_than_64_handles_sees_one_past_the_first_63(pipe_name: str) -> None:
    # 65 streams: the 64th and 65th events are watched by a helper thread, which
    # wakes the main wait when bytes reach the last stream.
    listener = _listen(pipe_name)
    clients: list[Any] = []
    servers: list[Any] = []
    try:
        for _ in range(65):
            clients.append(_connect(pipe_name))
            servers.append(listener.accept(Deadline(WAIT)))
        last = servers[-1]

        def send_once_watched() -> None:
            _wait_until(lambda: last._wait_owner is not None, "the last stream's wait")
            clients[-1].send([b"last"], Deadline(WAIT))

        sender = threading.Thread(target=send_once_watched, daemon=True)
        sender.start()
        started = time.monotonic()
        assert backend.wait_any(servers, Deadline(WAIT)) == [64]
        assert time.monotonic() - started < WAIT / 2
        sender.join(WAIT)
        assert _recv(last) == b"last"
        assert all(not s._wait_lock.locked() for s in servers)
    finally:
        for stream in clients + servers:
            stream.close()
        listener.close()
    _name_is_free(pipe_name)


# -- listeners ------------------------------------------------------------------


def test_ctrl_c_before_accept_issues_its_connect_keeps_the_listener(pipe_name: str) -> None:
    listener = _listen(pipe_name)
    try:
        with (
            pytest.raises(KeyboardInterrupt),
            _at_call("c_call", win32pipe.ConnectNamedPipe, _ctrl_c),
        ):
            listener.accept(Deadline(WAIT))
        with contextlib.closing(_connect(pipe_name)) as client:
            client.send([b"hello"], Deadline(WAIT))
            with contextlib.closing(listener.accept(Deadline(WAIT))) as server:
                assert _recv(server) == b"hello"
    finally:
        listener.close()
    _name_is_free(pipe_name)


def test_ctrl_c_before_wait_issues_its_connect_keeps_the_listener(pipe_name: str) -> None:
    listener = _listen(pipe_name)
    try:
        waiting = listener._pending
        with (
            pytest.raises(KeyboardInterrupt),
            _at_call("c_call", win32pipe.ConnectNamedPipe, _ctrl_c),
        ):
            backend.wait_any([listener], Deadline(WAIT))
        assert not listener._accept_lock.locked()
        assert listener._pending is waiting  # the same instance still listens
        with contextlib.closing(_connect(pipe_name)) as client:
            client.send([b"hello"], Deadline(WAIT))
            assert backend.wait_any([listener], Deadline(WAIT)) == [0]
            with contextlib.closing(listener.accept(Deadline(WAIT))) as server:
                assert _recv(server) == b"hello"
    finally:
        listener.close()
    _name_is_free(pipe_name)


def test_ctrl_c_as_wait_finds_a_connected_client_keeps_it(pipe_name: str) -> None:
    # The client connected first: wait's ConnectNamedPipe answers ERROR_PIPE_CONNECTED
    # at once, and Ctrl+C lands before that is recorded. The client is kept.
    listener = _listen(pipe_name)
    try:
        with contextlib.closing(_connect(pipe_name)) as client:
            client.send([b"kept"], Deadline(WAIT))
            with (
                pytest.raises(KeyboardInterrupt),
                _at_call("c_return", win32pipe.ConnectNamedPipe, _ctrl_c),
            ):
                backend.wait_any([listener], Deadline(WAIT))
            assert not listener._accept_lock.locked()
            assert listener.client_waiting()
            with contextlib.closing(listener.accept(Deadline(WAIT))) as server:
                assert _recv(server) == b"kept"
    finally:
        listener.close()
    _name_is_free(pipe_name)


def _line_of(function: Callable[..., Any], text: str) -> int:
    lines, first = inspect.getsourcelines(function)
    found = [first + at for at, line in enumerate(lines) if text in line]
    assert len(found) == 1, f"{text!r} in {function.__qualname__}: {found}"
    return found[0]


@contextlib.contextmanager
def _ctrl_c_at_line(function: Callable[..., Any], line: int) -> Iterator[None]:
    """Deliver Ctrl+C (once) as ``function`` is about to run its source ``line``
    (a ``sys.monitoring`` LINE event: leaves coverage's tracer alone)."""
    monitoring = sys.monitoring
    tool = next(i for i in range(6) if monitoring.get_tool(i) is None)
    code = function.__code__
    fired = False

    def on_line(code_: Any, number: int) -> Any:
        nonlocal fired
        if number != line or fired:
            return None
        fired = True
        monitoring.set_local_events(tool, code, 0)
        _thread.interrupt_main()
        return None

    monitoring.use_tool_id(tool, "npipes-test-ctrl-c")
    try:
        monitoring.register_callback(tool, monitoring.events.LINE, on_line)
        monitoring.set_local_events(tool, code, monitoring.events.LINE)
        yield
    finally:
        monitoring.set_local_events(tool, code, 0)
        monitoring.register_callback(tool, monitoring.events.LINE, None)
        monitoring.free_tool_id(tool)
    assert fired, f"line {line} of {function.__qualname__} never ran"


def test_ctrl_c_after_accept_found_a_connected_client_keeps_it(pipe_name: str) -> None:
    # ConnectNamedPipe answered ERROR_PIPE_CONNECTED and that was recorded; Ctrl+C
    # lands on the next line. The client is kept for the next accept.
    wait_for_client = backend.PipeListener._wait_for_client
    line = _line_of(wait_for_client, "connected = True  # 0 or ERROR_PIPE_CONNECTED")
    listener = _listen(pipe_name)
    try:
        with contextlib.closing(_connect(pipe_name)) as client:
            client.send([b"kept"], Deadline(WAIT))
            with pytest.raises(KeyboardInterrupt), _ctrl_c_at_line(wait_for_client, line):
                listener.accept(Deadline(WAIT))
            assert listener.client_waiting()
            with contextlib.closing(listener.accept(Deadline(WAIT))) as server:
                assert _recv(server) == b"kept"
    finally:
        listener.close()
    _name_is_free(pipe_name)


def test_wait_finds_a_client_that_connected_first_and_keeps_it(pipe_name: str) -> None:
    listener = _listen(pipe_name)
    try:
        with contextlib.closing(_connect(pipe_name)) as client:
            client.send([b"first"], Deadline(WAIT))
            assert backend.wait_any([listener], Deadline(WAIT)) == [0]
            assert backend.wait_any([listener], Deadline(WAIT)) == [0]  # still there
            assert listener.client_waiting()
            with contextlib.closing(listener.accept(Deadline(WAIT))) as server:
                assert _recv(server) == b"first"
            assert not listener.client_waiting()
    finally:
        listener.close()
    _name_is_free(pipe_name)


def test_wait_finds_a_client_that_wrote_and_left(pipe_name: str) -> None:
    listener = _listen(pipe_name)
    try:
        raw = _raw_client(listener.address)
        win32file.WriteFile(raw, b"bye")
        raw.Close()
        assert backend.wait_any([listener], Deadline(WAIT)) == [0]
        with contextlib.closing(listener.accept(Deadline(WAIT))) as server:
            assert _recv(server) == b"bye"
            assert server.recv_into(memoryview(bytearray(16)), Deadline(WAIT)) == 0
    finally:
        listener.close()
    _name_is_free(pipe_name)


def test_a_listener_held_by_another_threads_accept_is_busy_for_wait(pipe_name: str) -> None:
    listener = _listen(pipe_name)
    accepted: list[Any] = []
    acceptor = threading.Thread(
        target=lambda: accepted.append(listener.accept(Deadline(WAIT))), daemon=True
    )
    try:
        acceptor.start()
        _wait_until(listener._accept_lock.locked, "accept to hold the listener")
        assert not listener.client_waiting()
        started = time.monotonic()
        assert backend.wait_any([listener], Deadline(WAIT)) == []  # busy: look again soon
        assert time.monotonic() - started < WAIT / 2
        with contextlib.closing(_connect(pipe_name)) as client:
            client.send([b"to the acceptor"], Deadline(WAIT))
            acceptor.join(WAIT)
            assert len(accepted) == 1
            with contextlib.closing(accepted[0]) as server:
                assert _recv(server) == b"to the acceptor"
    finally:
        acceptor.join(WAIT)
        listener.close()
    _name_is_free(pipe_name)


def _cancel_from_outside(frame: Any) -> None:
    """The hostile act: cancel every I/O on the instance the listener just issued
    ConnectNamedPipe on (CancelIoEx), so that connect fails with ERROR_OPERATION_ABORTED."""
    backend._cancel_all(frame.f_locals["handle"])


def _start_after_closed(handle: Any, target: Callable[[], None]) -> threading.Thread:
    """Run ``target`` in a thread once ``handle`` (a PyHANDLE) was closed: a client
    connecting before would take the failed instance and be dropped with it, which is
    what replacing a failed instance means."""

    def run() -> None:
        _wait_until(lambda: int(handle) == 0, "the failed instance to be closed")
        target()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_accept_replaces_an_instance_whose_connect_failed_and_waits_on(pipe_name: str) -> None:
    listener = _listen(pipe_name)
    failed = listener._pending
    clients: list[Any] = []

    def connect_and_send() -> None:
        clients.append(_connect(pipe_name))
        clients[0].send([b"after the failure"], Deadline(WAIT))

    try:
        connector = _start_after_closed(failed, connect_and_send)
        with _at_call("c_return", win32pipe.ConnectNamedPipe, _cancel_from_outside):
            server = listener.accept(Deadline(WAIT))
        connector.join(WAIT)
        with contextlib.closing(server):
            assert _recv(server) == b"after the failure"
        assert int(failed) == 0  # the failed instance was closed, not leaked
        assert listener._pending is not None  # and a fresh one listens
    finally:
        for client in clients:
            client.close()
        listener.close()
    _name_is_free(pipe_name)


def test_wait_replaces_an_instance_whose_connect_failed(pipe_name: str) -> None:
    # The failed connect signals its event: wait may report the listener, but the
    # front end finds no client waiting and waits on the fresh instance.
    with npipes.listen(pipe_name) as listener:
        raw = listener._raw
        failed = raw._pending
        with _at_call("c_return", win32pipe.ConnectNamedPipe, _cancel_from_outside):
            assert npipes.wait([listener], timeout=0.5) == []
        assert int(failed) == 0  # closed, not leaked
        assert raw._pending is not None
        assert raw._pending is not failed
        assert not raw.client_waiting()
        with npipes.connect(pipe_name, timeout=WAIT) as client:
            client.send(b"hello")
            assert npipes.wait([listener], timeout=WAIT) == [listener]
            with listener.accept(timeout=WAIT) as server:
                assert server.recv(timeout=WAIT) == b"hello"
    _name_is_free(pipe_name)


def test_close_while_accept_finds_a_client_hands_that_client_out(pipe_name: str) -> None:
    # close() in another thread marks the listener closed, then waits for accept to
    # leave; accept, which found a connected client meanwhile, hands it out and makes
    # no new instance for a closed listener.
    listener = _listen(pipe_name)
    closer = threading.Thread(target=listener.close, daemon=True)

    def close_meanwhile(frame: Any) -> None:
        closer.start()
        _wait_until(lambda: listener.closed, "close to begin")

    with contextlib.closing(_connect(pipe_name)) as client:
        client.send([b"just in time"], Deadline(WAIT))
        with _at_call("c_return", win32pipe.ConnectNamedPipe, close_meanwhile):
            server = listener.accept(Deadline(WAIT))
        closer.join(WAIT)
        assert not closer.is_alive()
        with contextlib.closing(server):
            assert _recv(server) == b"just in time"
            server.send([b"reply"], Deadline(WAIT))
            assert _recv(client) == b"reply"
        assert listener._pending is None
        assert listener._ready is None
        with pytest.raises(npipes.ConnectionClosedError, match="listener is closed"):
            listener.accept(Deadline(WAIT))
    _name_is_free(pipe_name)


# -- a listener whose next instance cannot be made -------------------------------


class _Cap:
    """A foreign server that allows two instances of a name and keeps one busy.

    An npipes listener on that name then gets the second instance, and no third
    can be made until :meth:`release`. Only under Wine: Windows refuses such a
    listener (FILE_FLAG_FIRST_PIPE_INSTANCE, PipeInUseError), Wine ignores the
    flag (shared/windows-under-wine.md).
    """

    def __init__(self, name: str) -> None:
        path = _address(name).path
        self.server = win32pipe.CreateNamedPipe(
            path,
            win32pipe.PIPE_ACCESS_DUPLEX | win32file.FILE_FLAG_OVERLAPPED,
            win32pipe.PIPE_TYPE_MESSAGE | win32pipe.PIPE_READMODE_MESSAGE | win32pipe.PIPE_WAIT,
            2,
            4096,
            4096,
            0,
            None,
        )
        self.client = _raw_client(path)  # takes the foreign instance

    def release(self) -> None:
        self.client.Close()
        self.server.Close()


@contextlib.contextmanager
def _capped_listener(name: str) -> Iterator[tuple[Any, _Cap] | None]:
    """(listener, cap) under Wine; None where the OS refused the listener as it should."""
    cap = _Cap(name)
    try:
        try:
            listener = _listen(name)
        except npipes.PipeInUseError:  # Windows: the first-instance flag kept the name
            yield None
            return
        try:
            yield listener, cap
        finally:
            listener.close()
    finally:
        cap.release()
    _name_is_free(name)


def test_accept_after_the_next_instance_could_not_be_made(pipe_name: str) -> None:
    with _capped_listener(pipe_name) as capped:
        if capped is None:
            return
        listener, cap = capped
        with contextlib.closing(_connect(pipe_name)) as client:
            client.send([b"kept"], Deadline(WAIT))
            # The client connected, but the instance to wait next cannot be made.
            with pytest.raises(npipes.PipeBusyError, match="ERROR_PIPE_BUSY"):
                listener.accept(Deadline(WAIT))
            assert listener.client_waiting()  # the client was kept
            cap.release()
            # Now the next accept makes the waiting instance, then hands the client out.
            with contextlib.closing(listener.accept(Deadline(WAIT))) as server:
                assert _recv(server) == b"kept"
            with contextlib.closing(_connect(pipe_name)) as second:  # one waits again
                second.send([b"second"], Deadline(WAIT))
                with contextlib.closing(listener.accept(Deadline(WAIT))) as other:
                    assert _recv(other) == b"second"


def test_wait_after_a_failed_instance_could_not_be_replaced(pipe_name: str) -> None:
    with _capped_listener(pipe_name) as capped:
        if capped is None:
            return
        listener, cap = capped
        # The connect fails (cancelled from outside) and its replacement cannot be made:
        # accept fails typed, and the listener is left with no instance waiting.
        with (
            pytest.raises(npipes.PipeBusyError, match="ERROR_PIPE_BUSY"),
            _at_call("c_return", win32pipe.ConnectNamedPipe, _cancel_from_outside),
        ):
            listener.accept(Deadline(WAIT))
        assert listener._pending is None
        assert listener._ready is None
        cap.release()
        # wait makes the missing instance and watches it.
        clients: list[Any] = []
        connector = threading.Thread(
            target=lambda: clients.append(_connect(pipe_name)), daemon=True
        )
        connector.start()
        try:
            assert backend.wait_any([listener], Deadline(WAIT)) == [0]
            connector.join(WAIT)
            clients[0].send([b"found"], Deadline(WAIT))
            with contextlib.closing(listener.accept(Deadline(WAIT))) as server:
                assert _recv(server) == b"found"
        finally:
            connector.join(WAIT)
            for client in clients:
                client.close()
