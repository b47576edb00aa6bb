"""The sync front end's argument checks, lock deadlines and lifetime warnings, on real pipes.

Each rule here was only exercised by chance before: a bad ``recv_into`` buffer says what
is accepted, a ``recv_many``/``recv_into`` that waits for another thread's receive keeps
its own deadline, an unclosed connection or listener warns, and iteration stops only at a
clean close.
"""

from __future__ import annotations

import array
import contextlib
import gc
import threading
from collections.abc import Callable, Iterator

import pytest

import npipes
from npipes._frame import encode_frame


@contextlib.contextmanager
def pair(name: str) -> Iterator[tuple[npipes.Connection, npipes.Connection]]:
    with npipes.listen(name) as listener:
        client = npipes.connect(name, timeout=10)
        server = listener.accept(timeout=10)
        try:
            yield client, server
        finally:
            client.close()
            server.close()


def test_recv_into_says_which_buffers_it_takes(pipe_name: str) -> None:
    with pair(pipe_name) as (client, server):
        client.send(b"abc")
        with pytest.raises(TypeError, match="writable bytes-like object"):
            server.recv_into("not a buffer", timeout=10)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="bytes is read-only"):
            server.recv_into(b"\0" * 8, timeout=10)
        strided = memoryview(array.array("B", bytes(16)))[::2]
        with pytest.raises(TypeError, match="C-contiguous"):
            server.recv_into(strided, timeout=10)
        # None of these consumed the message.
        buf = bytearray(8)
        assert server.recv_into(buf, timeout=10) == 3
        assert bytes(buf[:3]) == b"abc"


def test_recv_many_checks_max_messages(pipe_name: str) -> None:
    with pair(pipe_name) as (_client, server):
        with pytest.raises(TypeError, match="max_messages must be an int"):
            server.recv_many(True)
        with pytest.raises(ValueError, match="at least 1"):
            server.recv_many(0)


def _until_timeout(call: Callable[[], object]) -> None:
    """Repeat ``call`` until it raises (the other thread takes the lock soon after it starts)."""
    for _ in range(50):
        call()


@pytest.mark.parametrize("call", ["recv_many", "recv_into"])
def test_receive_waiting_for_another_threads_recv_keeps_its_deadline(
    pipe_name: str, call: str
) -> None:
    with pair(pipe_name) as (client, server):
        started = threading.Event()
        got: list[object] = []

        def blocked_recv() -> None:
            started.set()
            got.append(server.recv(timeout=60))

        reader = threading.Thread(target=blocked_recv)
        reader.start()
        try:
            assert started.wait(10)
            # The other thread holds the receive lock until a message comes.
            with pytest.raises(npipes.PipeTimeoutError):
                _until_timeout(
                    lambda: (
                        server.recv_many(4, timeout=0.1)
                        if call == "recv_many"
                        else server.recv_into(bytearray(8), timeout=0.1)
                    )
                )
        finally:
            client.send("wake")
            reader.join(30)
        assert got == ["wake"]
        assert not server.closed  # a lock timeout touched nothing


def test_send_waiting_for_another_threads_send_keeps_its_deadline(pipe_name: str) -> None:
    with pair(pipe_name) as (client, server):
        # Fill the pipe so that one send blocks while holding the send lock.
        big = b"x" * (64 * 1024 * 1024)
        sender = threading.Thread(target=lambda: client.send(big, timeout=60))
        sender.start()
        try:
            with pytest.raises(npipes.PipeTimeoutError):
                _until_timeout(lambda: client.send(b"small", timeout=0.1))
        finally:
            assert server.recv(timeout=60) == big
            sender.join(60)
        client.send(b"after", timeout=10)
        assert server.recv(timeout=10) == b"after"


def test_repr_shows_address_and_state(pipe_name: str) -> None:
    with npipes.listen(pipe_name) as listener:
        assert "listening" in repr(listener)
        assert repr(listener.address) in repr(listener)
        client = npipes.connect(pipe_name, timeout=10)
        server = listener.accept(timeout=10)
        assert "open" in repr(client)
        client.abort()  # the sync abort is close
        assert client.closed
        assert "closed" in repr(client)
        server.close()
    assert "closed" in repr(listener)


def test_unclosed_connection_and_listener_warn(pipe_name: str) -> None:
    held: list[object] = [npipes.listen(pipe_name)]
    held.append(npipes.connect(pipe_name, timeout=10))
    server = held[0].accept(timeout=10)  # type: ignore[attr-defined]
    with pytest.warns(ResourceWarning, match="unclosed <npipes.Connection"):
        _drop(held, 1)
    server.close()
    with pytest.warns(ResourceWarning, match="unclosed <npipes.Listener"):
        _drop(held, 0)


def _drop(held: list[object], index: int) -> None:
    """Forget the only reference to ``held[index]`` and collect it."""
    del held[index]
    gc.collect()


@pytest.mark.posix
def test_iteration_raises_when_the_peer_dies_mid_message(pipe_name: str) -> None:
    import socket

    with npipes.listen(pipe_name) as listener:
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.connect(listener.address)
        server = listener.accept(timeout=10)
        raw.sendall(encode_frame(b"y" * 100)[:40])  # a header and part of the payload
        raw.close()
        with pytest.raises(npipes.IncompleteMessageError):
            list(server)
        server.close()


def test_accept_on_a_closed_listener_says_it_is_closed(pipe_name: str) -> None:
    listener = npipes.listen(pipe_name)
    listener.close()
    listener.close()  # idempotent
    with pytest.raises(npipes.ConnectionClosedError):
        listener.accept(timeout=10)
