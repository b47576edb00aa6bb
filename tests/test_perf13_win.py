"""Windows backend after the issue-13 speed work: what the faster paths must keep.

Real pipes against a raw pywin32 peer, no mocks. The backend now takes a
read's or write's byte count from the OVERLAPPED when the call completed at
once (no GetOverlappedResult), joins all-``bytes`` sends without views, and
sizes the pipe's buffer so one 64 KiB message with its frame fits.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import npipes
from npipes._deadline import Deadline
from npipes._frame import encode_frame
from npipes._names import resolve

pytestmark = pytest.mark.windows

if sys.platform == "win32":
    import win32file
    import win32pipe

    from npipes._backend import ListenOptions
    from npipes._backend import windows as backend

KiB = 1024


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


def _read_message(client: Any) -> bytes:
    """One whole pipe message, read in one ReadFile once it has arrived."""
    deadline = time.monotonic() + 30
    _, avail, left = win32pipe.PeekNamedPipe(client, 0)
    while not avail and time.monotonic() < deadline:
        time.sleep(0.01)
        _, avail, left = win32pipe.PeekNamedPipe(client, 0)
    assert avail, "no message arrived"
    rc, data = win32file.ReadFile(client, left)
    assert rc == 0, "the pipe message was longer than PeekNamedPipe said"
    return bytes(data)


@pytest.mark.parametrize("crc", [False, True])
def test_a_64_kib_message_is_taken_by_the_pipe_while_the_peer_reads_nothing(
    pipe_name: str, crc: bool
) -> None:
    # The pipe's buffer holds a 64 KiB message with its 16-byte header (and CRC):
    # send returns at once, as a raw pywin32 write of 64 KiB does, instead of
    # waiting for the reader (half the throughput under Wine before).
    payload = bytes(range(256)) * 256
    with npipes.listen(pipe_name) as lst:
        client = _client(lst.address)
        try:
            with lst.accept(timeout=10) as conn:
                conn.send(payload, timeout=10, crc=crc)  # nobody reads yet
                assert _read_message(client) == encode_frame(payload, crc=crc)
        finally:
            win32file.CloseHandle(client)


def test_reads_completed_at_once_report_counts_and_message_ends(pair: tuple[Any, Any]) -> None:
    # The message is there before each read, so every ReadFile completes at once
    # (0, or ERROR_MORE_DATA while the buffer is shorter than the message): the
    # count and the message end come from the OVERLAPPED.
    stream, client = pair
    win32file.WriteFile(client, b"0123456789abcdefghijKLMNO")
    win32file.WriteFile(client, b"next")
    buffer = bytearray(10)
    got = []
    for _ in range(3):
        count = stream.recv_into(memoryview(buffer), Deadline(10))
        got.append((bytes(buffer[:count]), stream.message_end))
    assert got == [(b"0123456789", False), (b"abcdefghij", False), (b"KLMNO", True)]
    count = stream.recv_into(memoryview(buffer), Deadline(10))
    assert (bytes(buffer[:count]), stream.message_end) == (b"next", True)


def test_a_read_that_waited_reports_its_count(pair: tuple[Any, Any]) -> None:
    stream, client = pair
    buffer = bytearray(64 * KiB + 64)
    with pytest.raises(npipes.PipeTimeoutError):
        stream.recv_into(memoryview(buffer), Deadline(0.2))  # pending, then cancelled
    message = b"w" * (64 * KiB + 16)
    win32file.WriteFile(client, message)
    count = stream.recv_into(memoryview(buffer), Deadline(10))
    assert count == len(message)
    assert bytes(buffer[:count]) == message
    assert stream.message_end


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ([b"ab", b"", b"cd"], b"abcd"),
        ([b"solo"], b"solo"),
        ([b"ab", bytearray(b"xy"), memoryview(b"z")], b"abxyz"),
        ([memoryview(b"12345678").cast("I"), b"!"], b"12345678!"),
    ],
    ids=["bytes", "one-bytes", "mixed", "wide-items"],
)
def test_each_send_is_one_pipe_message(
    pair: tuple[Any, Any], parts: list[Any], expected: bytes
) -> None:
    stream, client = pair
    stream.send(parts, Deadline(10))
    stream.send([b"", b""], Deadline(10))  # nothing at all: no empty pipe message
    stream.send([b"end"], Deadline(10))
    assert _read_message(client) == expected
    assert _read_message(client) == b"end"


def test_a_send_above_the_join_limit_arrives_whole(pair: tuple[Any, Any]) -> None:
    # Header and payload go as two WriteFiles (no copy); the peer gets every byte.
    stream, client = pair
    header, payload = b"H" * 16, bytes(range(256)) * (2 * KiB)  # 512 KiB
    received: list[bytes] = []
    reader = threading.Thread(
        target=lambda: received.extend([_read_message(client), _read_message(client)])
    )
    reader.start()
    stream.send([header, payload], Deadline(30))
    reader.join(30)
    assert received == [header, payload]
