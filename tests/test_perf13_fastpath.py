"""Issue 13: the receive fast paths (whole simple frames taken straight from the read
buffer, by the C accelerator or its pure twin) decline everything unusual, so every
rule still holds: per-call CRC requirements, errors in stream order and without
blocking, text checks, buffer sizes, batches stopping before an error.

Real sockets: the peer writes raw frame bytes through its own socket.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

import pytest

import npipes
from npipes import _accel
from npipes._frame import encode_frame

pytestmark = pytest.mark.posix  # raw bytes through the peer's socket


def _frame(payload: bytes, *, flags: int = 0, crc: int | None = None) -> bytes:
    if crc is not None:
        flags |= 1
    header = struct.pack("<2sBBIQ", b"NP", 1, flags, 0, len(payload))
    trailer = b"" if crc is None else struct.pack("<I", crc)
    return header + payload + trailer


@pytest.fixture
def pair(pipe_name: str) -> Iterator[tuple[npipes.Connection, npipes.Connection]]:
    with npipes.listen(pipe_name) as listener, npipes.connect(pipe_name, timeout=10) as peer:
        conn = listener.accept(timeout=10)
        with conn:
            yield conn, peer


def _raw(peer: npipes.Connection, data: bytes) -> None:
    peer._stream._sock.sendall(data)  # type: ignore[attr-defined]


def test_mode_is_reported() -> None:
    assert _accel.ACCELERATED is (_accel.speedups is not None)


def test_recv_crc_true_refuses_a_buffered_frame_without_crc(
    pair: tuple[npipes.Connection, npipes.Connection],
) -> None:
    conn, peer = pair
    _raw(peer, encode_frame(b"one") + encode_frame(b"two", crc=True))
    with pytest.raises(npipes.ChecksumError):
        conn.recv(crc=True, timeout=5)
    assert conn.recv(crc=True, timeout=5) == b"two"


def test_a_bad_crc_behind_good_frames_is_raised_in_order_without_waiting(
    pair: tuple[npipes.Connection, npipes.Connection],
) -> None:
    conn, peer = pair
    bad = _frame(b"bad", crc=zlib.crc32(b"bad") ^ 1)
    _raw(peer, encode_frame(b"a") + encode_frame(b"b", crc=True) + bad + encode_frame("c"))
    assert conn.recv() == b"a"
    assert conn.recv() == b"b"
    with pytest.raises(npipes.ChecksumError):
        conn.recv()  # no timeout: it must not wait for more bytes
    assert conn.recv() == "c"


def test_text_that_is_not_utf8_fails_that_message_only(
    pair: tuple[npipes.Connection, npipes.Connection],
) -> None:
    conn, peer = pair
    _raw(peer, _frame(b"\xff\xfe", flags=2) + encode_frame("after"))
    with pytest.raises(npipes.ProtocolError):
        conn.recv()
    assert conn.recv() == "after"
    assert not conn.closed


def test_recv_many_stops_before_an_error_and_the_next_call_raises_it(
    pair: tuple[npipes.Connection, npipes.Connection],
) -> None:
    conn, peer = pair
    bad = _frame(b"x", crc=0)
    _raw(peer, b"".join(encode_frame(b"%d" % n) for n in range(5)) + bad + encode_frame(b"z"))
    got: list[bytes | str] = []
    while len(got) < 5:
        got += conn.recv_many(timeout=5)
    assert got == [b"%d" % n for n in range(5)]
    with pytest.raises(npipes.ChecksumError):
        conn.recv_many(timeout=5)
    assert conn.recv_many(timeout=5) == [b"z"]


def test_recv_many_with_crc_true_stops_at_a_frame_without_one(
    pair: tuple[npipes.Connection, npipes.Connection],
) -> None:
    conn, peer = pair
    _raw(peer, encode_frame(b"a", crc=True) + encode_frame(b"b") + encode_frame(b"c", crc=True))
    first = conn.recv_many(crc=True, timeout=5)
    while len(first) < 1:
        first += conn.recv_many(crc=True, timeout=5)
    assert first == [b"a"]
    with pytest.raises(npipes.ChecksumError):
        conn.recv_many(crc=True, timeout=5)
    assert conn.recv_many(crc=True, timeout=5) == [b"c"]


def test_recv_into_too_small_consumes_nothing(
    pair: tuple[npipes.Connection, npipes.Connection],
) -> None:
    conn, peer = pair
    _raw(peer, encode_frame(b"12345678") + encode_frame("tx"))
    small = bytearray(4)
    with pytest.raises(npipes.BufferTooSmallError):
        conn.recv_into(small, timeout=5)
    big = bytearray(16)
    assert conn.recv_into(big, timeout=5) == 8
    assert big[:8] == b"12345678"
    assert conn.recv_into(big, timeout=5) == 2  # text as its UTF-8 bytes
    assert big[:2] == b"tx"


def test_max_message_size_is_enforced_on_buffered_frames(pipe_name: str) -> None:
    with (
        npipes.listen(pipe_name, max_message_size=4) as listener,
        npipes.connect(pipe_name, timeout=10) as peer,
        listener.accept(timeout=10) as conn,
    ):
        _raw(peer, encode_frame(b"ok") + encode_frame(b"too long"))
        assert conn.recv(timeout=5) == b"ok"
        with pytest.raises(npipes.MessageTooLargeError):
            conn.recv(timeout=5)
        assert conn.closed


def test_send_many_of_mixed_payloads_arrives_in_order(
    pair: tuple[npipes.Connection, npipes.Connection],
) -> None:
    conn, peer = pair
    big = b"B" * 100_000
    messages: list[object] = [b"a", "b", bytearray(b"c"), memoryview(b"d"), big, "\u20ac" * 3, b""]
    assert peer.send_many(messages) == len(messages)  # type: ignore[arg-type]
    got = [conn.recv(timeout=5) for _ in messages]
    assert got == [b"a", "b", b"c", b"d", big, "\u20ac" * 3, b""]


def test_send_many_refuses_the_whole_batch_when_one_is_bad(
    pair: tuple[npipes.Connection, npipes.Connection],
) -> None:
    conn, peer = pair
    with pytest.raises(TypeError):
        peer.send_many([b"a", 5])  # type: ignore[list-item]
    with pytest.raises(UnicodeEncodeError):
        peer.send_many([b"a", "\ud800"])
    peer.send(b"only this")
    assert conn.recv(timeout=5) == b"only this"
