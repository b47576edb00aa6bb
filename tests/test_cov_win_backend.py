"""The threaded Windows backend's edges, on real named pipes: typed errors, no leaked handles.

Each test drives ``npipes._backend.windows`` directly (the front ends guard these
paths before the backend sees them) and checks what a caller sees: the npipes error
class, the peer's view of the pipe, and the pipe name being free again afterwards.
"""

from __future__ import annotations

import gc
import sys
import threading

import pytest

import npipes
from npipes._deadline import Deadline

pytestmark = pytest.mark.windows

if sys.platform == "win32":
    import win32file
    import win32pipe

    from npipes._backend import ListenOptions
    from npipes._backend import windows as backend
    from npipes._names import Address, resolve

WAIT = 30.0


def _address(name: str) -> Address:
    return resolve(name, platform="win32")


def _pair(name: str) -> tuple[backend.PipeListener, backend.PipeStream, backend.PipeStream]:
    listener = backend.listen(_address(name), ListenOptions())
    client = backend.connect(_address(name), Deadline(WAIT), wait_for_listener=False)
    server = listener.accept(Deadline(WAIT))
    return listener, client, server


def _name_is_free(name: str) -> None:
    """A new listener takes ``name``: nothing of an earlier one (claim, instance) is left."""
    backend.listen(_address(name), ListenOptions()).close()


def _drop(held: list[object]) -> None:
    """Let go of the only reference to what ``held`` holds, and collect it."""
    held.clear()
    gc.collect()


def test_a_too_long_pipe_path_is_an_invalid_name() -> None:
    with pytest.raises(npipes.InvalidPipeNameError, match="shorter name"):
        backend.check_path("\\\\.\\pipe\\" + "x" * 300)


def test_recv_and_send_on_a_closed_stream_say_closed(pipe_name: str) -> None:
    listener, client, server = _pair(pipe_name)
    client.close()
    client.close()  # twice is harmless
    with pytest.raises(npipes.ConnectionClosedError):
        client.recv_into(memoryview(bytearray(16)), Deadline(WAIT))
    with pytest.raises(npipes.ConnectionClosedError):
        client.send([b"late"], Deadline(WAIT))
    assert server.recv_into(memoryview(bytearray(16)), Deadline(WAIT)) == 0  # the peer sees EOF
    server.close()
    listener.close()
    _name_is_free(pipe_name)


def test_close_from_another_thread_ends_a_blocked_send(pipe_name: str) -> None:
    listener, client, server = _pair(pipe_name)
    closer = threading.Timer(1.0, client.close)  # nobody reads: the 8 MiB write stays pending
    closer.start()
    try:
        with pytest.raises(npipes.ConnectionClosedError):
            client.send([b"x" * (8 << 20)], Deadline(WAIT))
    finally:
        closer.join(WAIT)
    server.close()
    listener.close()
    _name_is_free(pipe_name)


def test_an_unclosed_stream_warns_and_closes_its_handle(pipe_name: str) -> None:
    listener, client, server = _pair(pipe_name)
    held: list[object] = [client]
    del client
    with pytest.warns(ResourceWarning, match="unclosed npipes stream"):
        _drop(held)
    assert server.recv_into(memoryview(bytearray(16)), Deadline(WAIT)) == 0  # closed: EOF
    server.close()
    listener.close()


def test_an_unclosed_listener_warns_and_frees_the_name(pipe_name: str) -> None:
    listener = backend.listen(_address(pipe_name), ListenOptions())
    assert not listener.closed
    held: list[object] = [listener]
    del listener
    with pytest.warns(ResourceWarning, match="unclosed npipes listener"):
        _drop(held)
    _name_is_free(pipe_name)


def test_accept_and_close_on_a_closed_listener(pipe_name: str) -> None:
    listener = backend.listen(_address(pipe_name), ListenOptions())
    listener.close()
    assert listener.closed
    listener.close()  # twice is harmless
    with pytest.raises(npipes.ConnectionClosedError, match="listener is closed"):
        listener.accept(Deadline(WAIT))
    _name_is_free(pipe_name)


def test_create_instance_failure_is_a_typed_error() -> None:
    with pytest.raises(npipes.NpipesError):
        backend.create_instance("\\\\.\\nosuchdevice\\x", ListenOptions(), None, first=False)


def test_listen_on_a_foreign_pipe_at_its_instance_limit_fails_and_keeps_no_claim(
    pipe_name: str,
) -> None:
    # A foreign server allowing one instance: Windows refuses our first instance
    # (PipeInUseError, FILE_FLAG_FIRST_PIPE_INSTANCE); Wine ignores that flag and
    # refuses it as beyond the instance limit (ERROR_PIPE_BUSY). Either way typed.
    path = _address(pipe_name).path
    foreign = win32pipe.CreateNamedPipe(
        path,
        win32pipe.PIPE_ACCESS_DUPLEX | win32file.FILE_FLAG_OVERLAPPED,
        win32pipe.PIPE_TYPE_MESSAGE | win32pipe.PIPE_READMODE_MESSAGE | win32pipe.PIPE_WAIT,
        1,
        4096,
        4096,
        0,
        None,
    )
    try:
        with pytest.raises((npipes.PipeInUseError, npipes.PipeBusyError)):
            backend.listen(_address(pipe_name), ListenOptions())
    finally:
        foreign.Close()
    _name_is_free(pipe_name)  # the failed listen released its claim


def test_connect_to_a_path_that_is_no_pipe_is_a_typed_error() -> None:
    address = Address("x", "\\\\.\\nosuchdevice\\x", None)
    with pytest.raises(npipes.NpipesError):
        backend.connect(address, Deadline(WAIT), wait_for_listener=False)


def test_a_client_that_wrote_and_left_before_accept_is_still_read(pipe_name: str) -> None:
    listener = backend.listen(_address(pipe_name), ListenOptions())
    try:
        raw = win32file.CreateFile(
            _address(pipe_name).path,
            win32file.GENERIC_READ | win32file.GENERIC_WRITE,
            0,
            None,
            win32file.OPEN_EXISTING,
            0,
            None,
        )
        win32file.WriteFile(raw, b"bye")
        raw.Close()
        server = listener.accept(Deadline(WAIT))
        buffer = bytearray(16)
        got = server.recv_into(memoryview(buffer), Deadline(WAIT))
        assert bytes(buffer[:got]) == b"bye"
        assert server.recv_into(memoryview(buffer), Deadline(WAIT)) == 0
        server.close()
    finally:
        listener.close()
    _name_is_free(pipe_name)
