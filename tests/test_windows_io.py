"""Windows backend I/O under timeouts, interrupts and odd sizes (issue 10, section 6).

Each test drives the backend's ``PipeStream`` directly against a raw pywin32
client (real pipes, no mocks), so it checks the backend's own contract with
the connection core: a timeout or cancel touches only its own operation, a
read completed under Ctrl+C is reported as ``npipes_received``, a send cut off
after the peer read part of it is ``partial``.
"""

from __future__ import annotations

import _thread
import contextlib
import mmap
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import npipes
from helpers import finish, start
from npipes._deadline import NO_DEADLINE, Deadline
from npipes._names import resolve

pytestmark = pytest.mark.windows

if sys.platform == "win32":
    import pywintypes
    import win32file
    import win32pipe

    import winpeers
    from npipes._backend import ListenOptions
    from npipes._backend import windows as backend

MiB = 1 << 20


@pytest.fixture
def listener(pipe_name: str) -> Iterator[Any]:
    lst = backend.listen(resolve(pipe_name), ListenOptions())
    yield lst
    lst.close()


def _client(path: str) -> Any:
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


@pytest.fixture
def pair(listener: Any) -> Iterator[tuple[Any, Any]]:
    """(server stream, raw client handle)."""
    client = _client(listener.address)
    stream = listener.accept(Deadline(10))
    yield stream, client
    stream.close()
    win32file.CloseHandle(client)


def _read_exactly(handle: Any, size: int, timeout: float = 30) -> bytes:
    """Read ``size`` bytes, or what came within ``timeout`` (polls, so it never hangs)."""
    data = bytearray()
    end = time.monotonic() + timeout
    while len(data) < size and time.monotonic() < end:
        _, avail, _ = win32pipe.PeekNamedPipe(handle, 0)
        if avail:
            data += win32file.ReadFile(handle, min(size - len(data), avail, MiB))[1]
        else:
            time.sleep(0.01)
    return bytes(data)


def _in_thread(target: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    """Run ``target(*args)``; the list gets its result or the exception it raised."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(target(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_recv_timeout_leaves_another_threads_send_alone(pair: tuple[Any, Any]) -> None:
    stream, client = pair
    payload = bytes(range(256)) * (8 * MiB // 256)
    sender, sent = _in_thread(stream.send, [payload], NO_DEADLINE)
    time.sleep(0.5)  # the 8 MiB WriteFile is pending: the client reads nothing yet
    with pytest.raises(npipes.PipeTimeoutError):
        stream.recv_into(memoryview(bytearray(100)), Deadline(0.3))
    assert _read_exactly(client, len(payload)) == payload
    sender.join(30)
    assert sent == [None]


def test_send_timeout_leaves_another_threads_recv_alone(pair: tuple[Any, Any]) -> None:
    stream, client = pair
    buffer = bytearray(100)
    receiver, received = _in_thread(stream.recv_into, memoryview(buffer), NO_DEADLINE)
    time.sleep(0.3)  # the ReadFile is pending
    with pytest.raises(npipes.PipeTimeoutError):
        stream.send([b"x" * (8 * MiB)], Deadline(0.3))  # nobody reads it
    assert receiver.is_alive()
    win32file.WriteFile(client, b"ping")
    receiver.join(30)
    assert received == [4]
    assert bytes(buffer[:4]) == b"ping"


def test_send_timeout_after_the_peer_read_part_is_partial(pair: tuple[Any, Any]) -> None:
    stream, client = pair

    def read_a_little() -> bytes:
        time.sleep(0.3)
        _, chunk = win32file.ReadFile(client, 64 * 1024)
        return bytes(chunk)

    reader, chunks = _in_thread(read_a_little)
    with pytest.raises(npipes.PipeTimeoutError) as info:
        stream.send([b"y" * MiB], Deadline(2))
    reader.join(30)
    assert len(chunks[0]) == 64 * 1024  # the peer holds part of the message
    assert info.value.partial


def test_ctrl_c_during_send_propagates_and_spares_the_recv(pair: tuple[Any, Any]) -> None:
    stream, client = pair
    buffer = bytearray(100)
    receiver, received = _in_thread(stream.recv_into, memoryview(buffer), NO_DEADLINE)
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        stream.send([b"z" * (8 * MiB)], NO_DEADLINE)
    assert time.monotonic() - started < 5
    timer.join()
    win32file.WriteFile(client, b"pong")
    receiver.join(30)
    assert received == [4]
    assert bytes(buffer[:4]) == b"pong"


def _interrupt_then_write(client: Any, message: bytes) -> None:
    time.sleep(0.3)  # the main thread waits in recv_into by now
    _thread.interrupt_main()  # delivered once its wait returns...
    win32file.WriteFile(client, message)  # ...which this write makes happen


def test_ctrl_c_during_recv_keeps_a_read_that_completed(pair: tuple[Any, Any]) -> None:
    stream, client = pair
    for i in range(4):
        message = f"message {i}".encode()
        buffer = bytearray(100)
        data = None
        thread = threading.Thread(target=_interrupt_then_write, args=(client, message))
        try:
            thread.start()
            count = stream.recv_into(memoryview(buffer), NO_DEADLINE)
            data = bytes(buffer[:count])
            time.sleep(3)  # the interrupt lands here if the read returned first
        except KeyboardInterrupt as exc:
            got = getattr(exc, "npipes_received", 0)
            if got:
                data = bytes(buffer[:got])
                assert stream.message_end
        thread.join(10)
        if data is None:  # interrupted before the write: the message still waits
            count = stream.recv_into(memoryview(buffer), Deadline(10))
            data = bytes(buffer[:count])
        assert data == message


def _interrupt_then_connect(path: str, message: bytes, out: list[Any]) -> None:
    time.sleep(0.3)  # the main thread waits in accept by now
    _thread.interrupt_main()
    try:
        client = _client(path)
        win32file.WriteFile(client, message)
        out.append(client)
    except pywintypes.error as exc:
        out.append(exc)


def test_ctrl_c_during_accept_keeps_a_client_that_connected(listener: Any) -> None:
    for i in range(4):
        message = f"client {i}".encode()
        out: list[Any] = []
        thread = threading.Thread(
            target=_interrupt_then_connect, args=(listener.address, message, out)
        )
        stream = None
        try:
            thread.start()
            stream = listener.accept(NO_DEADLINE)
            time.sleep(3)  # the interrupt lands here if accept returned first
        except KeyboardInterrupt:
            pass
        thread.join(10)
        assert not isinstance(out[0], Exception), out
        try:
            if stream is None:
                stream = listener.accept(Deadline(10))  # the kept client
            buffer = bytearray(100)
            count = stream.recv_into(memoryview(buffer), Deadline(10))
            assert bytes(buffer[:count]) == message
        finally:
            if stream is not None:
                stream.close()
            win32file.CloseHandle(out[0])


def test_recv_deadline_holds_against_a_flood_of_empty_messages(pair: tuple[Any, Any]) -> None:
    stream, client = pair
    stop = threading.Event()

    def flood() -> None:
        end = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < end:
            win32file.WriteFile(client, b"")

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        time.sleep(0.2)
        started = time.monotonic()
        with pytest.raises(npipes.PipeTimeoutError) as info:
            stream.recv_into(memoryview(bytearray(100)), Deadline(0.5))
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        flooder.join(30)
    assert not info.value.partial
    assert elapsed < 5, f"recv(timeout=0.5) took {elapsed:.1f} s"


@pytest.fixture
def over_4_gib() -> Iterator[memoryview]:
    """4 GiB + 4 KiB (more than a DWORD can say) that cost no memory until touched."""
    area = mmap.mmap(-1, (1 << 32) + 4096)
    view = memoryview(area)
    yield view
    del view
    with contextlib.suppress(BufferError):  # a traceback may still hold a slice
        area.close()


def test_recv_into_a_buffer_over_4_gib(pair: tuple[Any, Any], over_4_gib: memoryview) -> None:
    stream, client = pair
    win32file.WriteFile(client, b"hello")
    assert stream.recv_into(over_4_gib, Deadline(10)) == 5
    assert over_4_gib[:5] == b"hello"


def test_send_over_4_gib_fails_typed_before_writing(
    pair: tuple[Any, Any], over_4_gib: memoryview
) -> None:
    stream, client = pair
    with pytest.raises(npipes.MessageTooLargeError):
        stream.send([b"HEADER!!", over_4_gib], NO_DEADLINE)
    _, avail, _ = win32pipe.PeekNamedPipe(client, 0)
    assert avail == 0  # no header left behind on the connection
    stream.send([b"next"], Deadline(10))
    assert win32file.ReadFile(client, 100)[1] == b"next"


def _private_bytes() -> int:
    import win32api
    import win32process

    return int(win32process.GetProcessMemoryInfo(win32api.GetCurrentProcess())["PagefileUsage"])


def test_an_oversized_pipe_message_arrives_in_buffer_sized_chunks(listener: Any) -> None:
    # The backend sizes reads by the caller's buffer (the decoder's), never by
    # PeekNamedPipe: a 128 MiB pipe message under a 1 MiB limit costs this side
    # about 1 MiB, and message_end says the message goes on, so a raw or
    # multiprocessing decoder can refuse it at the limit.
    proc = start(winpeers.write_one_message, listener.address, 128 * MiB)
    try:
        stream = listener.accept(Deadline(30))
        with contextlib.closing(stream):
            buffer = memoryview(bytearray(MiB))
            before = _private_bytes()
            count = stream.recv_into(buffer, Deadline(30))
            grown = _private_bytes() - before
            assert count == MiB
            assert not stream.message_end
            assert grown < 16 * MiB, f"reading 1 MiB of a 128 MiB message grew memory by {grown}"
    finally:
        assert finish(proc) == 0


def test_connection_closes_after_a_send_timeout_the_peer_read_part_of(pipe_name: str) -> None:
    # End to end: the front end sees partial=True and closes, so the next frame
    # can never land behind the torn one.
    with npipes.listen(pipe_name) as lst:
        client = _client(lst.address)
        try:
            with lst.accept(timeout=10) as conn:

                def read_a_little() -> int:
                    time.sleep(0.3)
                    got = b""
                    while len(got) < 64 * 1024:  # the header, then part of the payload
                        got += win32file.ReadFile(client, 64 * 1024 - len(got))[1]
                    return len(got)

                reader, got = _in_thread(read_a_little)
                with pytest.raises(npipes.PipeTimeoutError) as info:
                    conn.send(b"y" * MiB, timeout=2)
                reader.join(30)
                assert got == [64 * 1024]
                assert info.value.partial
                assert conn.closed
        finally:
            win32file.CloseHandle(client)


def test_accepts_that_time_out_lose_no_client(listener: Any) -> None:
    # Each timed-out accept cancels its ConnectNamedPipe and keeps the same
    # instance listening: a client connecting in between is never closed on.
    count = 30
    out: list[Any] = []

    def clients() -> None:
        for i in range(count):
            for _ in range(200):
                try:
                    out.append(_client(listener.address))
                    break
                except pywintypes.error as exc:
                    if exc.winerror != 231:  # ERROR_PIPE_BUSY: wait for an accept
                        out.append(exc)
                        return
                    time.sleep(0.01)
            win32file.WriteFile(out[-1], b"c%d" % i)

    thread = threading.Thread(target=clients, daemon=True)
    thread.start()
    got = []
    end = time.monotonic() + 60
    while len(got) < count and time.monotonic() < end:
        try:
            stream = listener.accept(Deadline(0.005))
        except npipes.PipeTimeoutError:
            continue
        with contextlib.closing(stream):
            buffer = bytearray(16)
            got.append(bytes(buffer[: stream.recv_into(memoryview(buffer), Deadline(10))]))
    thread.join(30)
    for handle in out:
        if not isinstance(handle, Exception):
            win32file.CloseHandle(handle)
    assert sorted(got) == sorted(b"c%d" % i for i in range(count))
