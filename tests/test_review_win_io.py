"""Review of the Windows backend: Ctrl+C at the edges of an overlapped operation.

A Ctrl+C is raised at the next bytecode boundary, so it can land right after
``ReadFile``/``WriteFile``/``ConnectNamedPipe`` returned and before the code
that waits for (or records) the operation runs. A profile hook raises it at
exactly that point (``_thread.interrupt_main`` on the call's ``c_return``):
the pipes, the peer and the signal are real; only the timing is pinned.
"""

from __future__ import annotations

import _thread
import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import npipes
from npipes._deadline import Deadline
from npipes._names import resolve

pytestmark = pytest.mark.windows

if sys.platform == "win32":
    import pywintypes
    import win32file
    import win32pipe

    from npipes._backend import ListenOptions
    from npipes._backend import windows as backend


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


@contextlib.contextmanager
def _ctrl_c_after(function: Callable[..., Any]) -> Iterator[None]:
    """Deliver Ctrl+C (once) the moment the C function ``function`` returns."""
    fired = False

    def hook(frame: Any, event: str, arg: Any) -> None:
        nonlocal fired
        if event == "c_return" and arg is function and not fired:
            fired = True
            sys.setprofile(None)
            _thread.interrupt_main()

    sys.setprofile(hook)
    try:
        yield
    finally:
        sys.setprofile(None)
    assert fired, f"{function} was never called"


def test_ctrl_c_right_after_a_pending_read_is_issued_loses_nothing(
    pair: tuple[Any, Any],
) -> None:
    # The ReadFile is pending when Ctrl+C lands: it must be cancelled and
    # awaited, or it stays pending into this buffer and swallows the next message.
    stream, client = pair
    first = bytearray(100)
    with pytest.raises(KeyboardInterrupt) as info, _ctrl_c_after(win32file.ReadFile):
        stream.recv_into(memoryview(first), Deadline(10))
    assert not getattr(info.value, "npipes_received", 0)
    win32file.WriteFile(client, b"after")
    second = bytearray(100)
    count = stream.recv_into(memoryview(second), Deadline(10))
    assert bytes(second[:count]) == b"after"
    assert first == bytearray(100)  # the abandoned buffer was never written


def test_ctrl_c_right_after_a_read_completed_at_once_keeps_it(pair: tuple[Any, Any]) -> None:
    # The message was waiting, so ReadFile completed at once: Ctrl+C before the
    # result was taken must report it (npipes_received), not drop it.
    stream, client = pair
    win32file.WriteFile(client, b"waiting")
    buffer = bytearray(100)
    data = None
    with pytest.raises(KeyboardInterrupt) as info, _ctrl_c_after(win32file.ReadFile):
        stream.recv_into(memoryview(buffer), Deadline(10))
    got = getattr(info.value, "npipes_received", 0)
    if got:
        data = bytes(buffer[:got])
    else:  # not taken: it must still be there
        win32file.WriteFile(client, b"marker")
        count = stream.recv_into(memoryview(buffer), Deadline(10))
        data = bytes(buffer[:count])
    assert data == b"waiting"


def test_ctrl_c_right_after_a_write_is_issued_leaves_no_write_pending(
    pair: tuple[Any, Any],
) -> None:
    # An 8 MiB WriteFile is pending (nobody reads yet) when Ctrl+C lands: it
    # must be cancelled and awaited before send returns, never left pending on
    # a buffer the caller may free. A left-over write would go on delivering
    # all 8 MiB to a peer that reads.
    stream, client = pair
    size = 8 << 20
    with pytest.raises(KeyboardInterrupt), _ctrl_c_after(win32file.WriteFile):
        stream.send([b"w" * size], Deadline(10))
    drained = 0
    quiet_since = time.monotonic()
    end = time.monotonic() + 30
    while time.monotonic() - quiet_since < 1.5 and time.monotonic() < end:
        _, avail, _ = win32pipe.PeekNamedPipe(client, 0)
        if avail:
            drained += len(win32file.ReadFile(client, min(avail, 1 << 20))[1])
            quiet_since = time.monotonic()
        else:
            time.sleep(0.01)
    assert drained < size, "the interrupted WriteFile stayed pending and delivered everything"


def test_ctrl_c_right_after_connect_named_pipe_keeps_the_client(listener: Any) -> None:
    # The client connected before accept, so ConnectNamedPipe returns
    # ERROR_PIPE_CONNECTED at once; Ctrl+C before that was recorded must not
    # close the instance: the next accept returns that client.
    client = _client(listener.address)
    try:
        win32file.WriteFile(client, b"hello")
        with pytest.raises(KeyboardInterrupt), _ctrl_c_after(win32pipe.ConnectNamedPipe):
            listener.accept(Deadline(10))
        stream = listener.accept(Deadline(10))
        with contextlib.closing(stream):
            buffer = bytearray(100)
            count = stream.recv_into(memoryview(buffer), Deadline(10))
            assert bytes(buffer[:count]) == b"hello"
    finally:
        win32file.CloseHandle(client)


def _interrupt_then_write(client: Any, message: bytes) -> None:
    time.sleep(0.3)  # the main thread waits in recv by now
    _thread.interrupt_main()  # delivered when its wait returns...
    with contextlib.suppress(pywintypes.error):  # the server may close on the torn message
        win32file.WriteFile(client, message)  # ...which this write makes happen at once


def test_ctrl_c_keeps_a_read_that_ended_mid_message_as_mid_message(pipe_name: str) -> None:
    # raw framing: one pipe message is one message. A read that completed under
    # Ctrl+C with ERROR_MORE_DATA must reach the core as "message goes on" (the
    # core then breaks the connection: half a message was taken), never as a
    # message end, which silently split the message in two (64 KiB, then the rest).
    message = bytes(range(256)) * 4096  # 1 MiB, more than one read
    with npipes.listen(pipe_name, framing="raw") as lst:
        for _ in range(5):
            client = _client(lst.address)
            try:
                with lst.accept(timeout=10) as conn:
                    writer = threading.Thread(
                        target=_interrupt_then_write, args=(client, message), daemon=True
                    )
                    writer.start()
                    received = 0
                    got: bytes | str | None = None
                    try:
                        got = conn.recv(timeout=30)
                    except KeyboardInterrupt as exc:
                        received = getattr(exc, "npipes_received", 0)
                        with contextlib.suppress(npipes.ConnectionClosedError):
                            got = conn.recv(timeout=30)  # whole, or a typed error
                    else:
                        time.sleep(3)  # the interrupt lands here
                    writer.join(30)
                    if got is not None:
                        assert len(got) == len(message)
                        assert got == message
                    if received:
                        return  # the case under test happened, and held
            except KeyboardInterrupt:
                pass  # landed after recv returned: try again
            finally:
                win32file.CloseHandle(client)
    pytest.fail("Ctrl+C never landed on a completed read in 5 tries")
