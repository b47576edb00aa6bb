"""Framings other than npipes v1 (docs/framings.md): each codec's bytes and test vectors,
round trips of 0 B / 1 MiB / 64 MiB messages in both directions, CPython's
``multiprocessing.connection`` as a real peer in either role (with and without
``authkey``), the ``authkey`` handshake, npipes 1.x senders meeting ``IPC``, ``raw`` on
each platform, ``lines`` with a shell and the command line, ``dotnet``, a codec of your
own (the one docs/framings.md shows), option checks, and all of it through npipes.aio.

Both ends usually live in this process (a thread for the side that must run
concurrently); the stdlib and npipes peers that must be independent programs run in
spawned processes (tests/framing_peers.py). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import mmap
import multiprocessing.connection
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

import framing_peers
import npipes
import npipes.aio as aio
from framing_peers import NPIPES1_HELLO, pattern
from helpers import finish, start
from npipes import (
    AuthenticationError,
    ChecksumError,
    ConnectionClosedError,
    MessageTooLargeError,
    ProtocolError,
)
from npipes._framings import (
    DotnetCodec,
    LinesCodec,
    MultiprocessingCodec,
    Npipes1Codec,
    RawCodec,
    get_codec,
)
from npipes.ipc import IPC

MiB = 1024 * 1024
WAIT = 30.0
IS_WINDOWS = sys.platform == "win32"
FAMILY = "AF_PIPE" if IS_WINDOWS else "AF_UNIX"
KEY = b"framing tests: the shared key"
DOC = Path(__file__).parent.parent / "docs" / "framings.md"
T = TypeVar("T")

Payload = bytes | bytearray | memoryview | str


# -- helpers ----------------------------------------------------------------------------


def joined(parts: Any) -> bytes:
    """What a codec's ``encode`` puts on the wire, as one bytes object."""
    return b"".join(bytes(memoryview(part)) for part in parts)


def decode_all(codec: Any, data: bytes, *, eof: bool = False, **options: Any) -> list[Any]:
    """Feed ``data`` to a fresh decoder one byte at a time; every message it yields."""
    options.setdefault("max_message_size", None)
    options.setdefault("require_crc", False)
    options.setdefault("message_mode", False)
    decoder = codec.decoder(**options)
    frames = []
    for i in range(len(data)):
        decoder.feed_data(data[i : i + 1])
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame.message)
    if eof:
        decoder.feed_eof()
        end: Exception | None = None
        while end is None:
            try:
                frame = decoder.next_frame()
            except ConnectionClosedError as exc:  # after the last message
                end = exc
                continue
            assert frame is not None  # at EOF a decoder never waits for more
            frames.append(frame.message)
        assert type(end) is ConnectionClosedError, end  # not IncompleteMessageError
    return frames


@contextlib.contextmanager
def pair(
    name: str, framing: Any = "npipes", client_framing: Any = None, **server_options: Any
) -> Iterator[tuple[npipes.Connection, npipes.Connection]]:
    """``(server, client)``, both in this process; no authkey (its handshake needs a thread)."""
    with (
        npipes.listen(name, framing=framing, **server_options) as listener,
        npipes.connect(name, framing=client_framing or framing, timeout=WAIT) as client,
        listener.accept(timeout=WAIT) as server,
    ):
        yield server, client


def recv_total(conn: npipes.Connection, total: int) -> bytes:
    """``raw`` on POSIX: read pieces until ``total`` bytes came; only their concatenation counts."""
    pieces = []
    size = 0
    while size < total:
        piece = conn.recv(timeout=WAIT)
        assert type(piece) is bytes
        assert piece, "raw framing returned an empty piece"
        pieces.append(piece)
        size += len(piece)
    data = b"".join(pieces)
    assert len(data) == total
    return data


def send_all(conn: npipes.Connection, messages: list[Any]) -> None:
    for message in messages:
        conn.send(message, timeout=WAIT)


def recv_n(conn: npipes.Connection, count: int) -> list[bytes | str]:
    return [conn.recv(timeout=WAIT) for _ in range(count)]


def check_messages(got: list[Any], expected: list[Any]) -> None:
    assert len(got) == len(expected)
    for one, want in zip(got, expected, strict=True):
        assert type(one) is type(want)
        assert len(one) == len(want)
        assert one == want


def stdlib_address(name: str) -> str:
    """Where a stdlib ``Listener`` in a peer process listens (an address npipes can connect to)."""
    if IS_WINDOWS:
        return "\\\\.\\pipe\\" + name
    return str(Path(tempfile.gettempdir()) / f"{name}.mp")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, bounded like every other wait."""

    async def bounded() -> T:
        async with asyncio.timeout(4 * WAIT):
            return await main

    return asyncio.run(bounded())


# Messages each framing carries, as (sent, received): the framing decides the type.
BIG = pattern(MiB)
ROUND_TRIPS: dict[str, list[tuple[Payload, bytes | str]]] = {
    "npipes": [(b"", b""), ("", ""), ("héllo", "héllo"), (BIG, BIG)],
    "multiprocessing": [
        *([] if IS_WINDOWS else [(b"", b"")]),  # Windows skips zero-length pipe messages
        (b"\x00\xff", b"\x00\xff"),
        (bytearray(b"array"), b"array"),
        ("text", b"text"),
        (BIG, BIG),
    ],
    "npipes1": [("", ""), ("Hello", "Hello"), (b"bytes", "bytes"), ("x" * MiB, "x" * MiB)],
    "lines": [
        ("", ""),
        ("héllo wörld ✓", "héllo wörld ✓"),
        (b"bytes", "bytes"),
        ("x" * MiB, "x" * MiB),
    ],
    "dotnet": [
        ("", ""),
        ("Hi", "Hi"),
        ("😀 non-BMP 𝄞", "😀 non-BMP 𝄞"),
        ("x" * 32767, "x" * 32767),  # 65534 bytes, the largest even size
    ],
    "raw": [(b"a", b"a"), (memoryview(b"view"), b"view"), ("text", b"text"), (BIG, BIG)],
}
ALL_FRAMINGS = sorted(ROUND_TRIPS)
STREAM_ONLY_ON_WINDOWS_AIO = {"raw", "multiprocessing"}


# -- option checks ----------------------------------------------------------------------------

NO_CRC = ["multiprocessing", "raw", "lines", "dotnet"]
NO_AUTH = ["raw", "lines", "dotnet", "npipes1"]


def _refusals() -> list[Any]:
    cases = [pytest.param({"framing": f, "crc": True}, ValueError, id=f"crc-{f}") for f in NO_CRC]
    cases += [
        pytest.param({"framing": f, "authkey": KEY}, ValueError, id=f"authkey-{f}") for f in NO_AUTH
    ]
    cases += [
        pytest.param({"framing": "msgpack"}, ValueError, id="unknown-name"),
        pytest.param({"framing": object()}, TypeError, id="not-a-codec"),
        pytest.param({"framing": b"lines"}, TypeError, id="bytes-name"),
    ]
    return cases


@pytest.mark.parametrize(("options", "error"), _refusals())
def test_options_a_framing_cannot_honour_are_refused(
    pipe_name: str, options: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        npipes.listen(pipe_name, **options)
    with pytest.raises(error):
        npipes.connect(pipe_name, timeout=1, **options)
    with pytest.raises(error):
        npipes.serve(pipe_name, lambda conn: None, **options)
    with pytest.raises(error):
        run(aio.listen(pipe_name, **options))
    with pytest.raises(error):
        run(aio.connect(pipe_name, timeout=1, **options))
    # Nothing was created: the name is still free.
    with npipes.listen(pipe_name):
        pass


def test_refusals_explain_themselves() -> None:
    with pytest.raises(ValueError, match="no checksum"):
        get_codec("lines", crc=True)
    with pytest.raises(ValueError, match="authkey works with the npipes and multiprocessing"):
        get_codec("dotnet", authkey=KEY)
    with pytest.raises(ValueError, match=r"unknown framing 'msgpack'.*dotnet"):
        get_codec("msgpack")
    with pytest.raises(TypeError, match="framing must be a name or a codec object"):
        get_codec(42)  # type: ignore[arg-type]
    # What each framing does allow.
    assert get_codec("npipes1", crc=True).name == "npipes1"
    assert get_codec("multiprocessing", authkey=KEY).name == "multiprocessing"
    assert get_codec("npipes", crc=True, authkey=KEY).name == "npipes"


def test_ipc_and_cli_refuse_unknown_framings(
    pipe_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match="unknown framing"):
        IPC(pipe_name, framing="nope", timeout=1)
    from npipes.cli import main

    with pytest.raises(SystemExit) as info:
        main(["recv", "--name", pipe_name, "--framing", "nope", "--timeout", "1"])
    assert info.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


# -- multiprocessing: the codec against the standard library -------------------------------


def _stdlib_stream_pair() -> tuple[multiprocessing.connection.Connection, socket.socket]:
    """A stdlib ``Connection`` on one end of a socket pair; a socket on the other."""
    ours, theirs = socket.socketpair()
    return multiprocessing.connection.Connection(theirs.detach()), ours


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk
        data += chunk
    return bytes(data)


@pytest.mark.parametrize("size", [0, 1, 16384, 16385, 100_000])
def test_multiprocessing_stream_bytes_equal_the_stdlib_s(size: int) -> None:
    # 16384/16385: the stdlib writes header and payload together up to 16 KiB, apart above.
    payload = pattern(size)
    ours = joined(
        MultiprocessingCodec(message_mode=False).encode(payload, crc=False, max_size=None)
    )
    assert ours == struct.pack("!i", size) + payload
    std, sock = _stdlib_stream_pair()
    with std, sock, ThreadPoolExecutor(1) as pool:
        sending = pool.submit(std.send_bytes, payload)
        assert _read_exactly(sock, len(ours)) == ours  # stdlib -> exactly our encoding
        sending.result(WAIT)
        sending = pool.submit(sock.sendall, ours)
        assert std.recv_bytes() == payload  # our encoding -> the stdlib decodes it
        sending.result(WAIT)
        # And our decoder reads what the stdlib wrote.
        sending = pool.submit(std.send_bytes, payload)
        assert decode_all(MultiprocessingCodec(), _read_exactly(sock, len(ours))) == [payload]
        sending.result(WAIT)


def test_multiprocessing_uses_the_long_header_from_2_gib() -> None:
    size = 0x80000000  # the first size that does not fit "!i"
    try:
        big = mmap.mmap(-1, size)  # reserved, never touched: no 2 GiB of memory used
    except (OSError, OverflowError, MemoryError) as exc:
        pytest.skip(f"cannot map 2 GiB of address space here: {exc}")
    with big:
        view = memoryview(big)
        try:
            parts = MultiprocessingCodec(message_mode=False).encode(view, crc=False, max_size=None)
            assert bytes(parts[0]) == bytes.fromhex("ffffffff 0000000080000000")
            assert memoryview(parts[1]).nbytes == size  # the payload itself, not a copy
            assert len(parts) == 2
            parts = None
            # Just below: the short header.
            small = MultiprocessingCodec(message_mode=False).encode(
                view[:-1], crc=False, max_size=None
            )
            assert bytes(small[0]) == bytes.fromhex("7fffffff")
            small = None
        finally:
            view.release()


def test_multiprocessing_decodes_the_long_header() -> None:
    # A hand-made 2 GiB-style header (-1, then an 8-byte length) with a small payload.
    wire = bytes.fromhex("ffffffff 0000000000000005") + b"hello" + struct.pack("!i", 2) + b"ok"
    assert decode_all(MultiprocessingCodec(), wire) == [b"hello", b"ok"]
    # The standard library reads the very same bytes the same way.
    std, sock = _stdlib_stream_pair()
    with std, sock:
        sock.sendall(wire)
        assert std.recv_bytes() == b"hello"
        assert std.recv_bytes() == b"ok"


def test_multiprocessing_decoder_errors() -> None:
    decoder = MultiprocessingCodec().decoder(
        max_message_size=None, require_crc=False, message_mode=False
    )
    decoder.feed_data(struct.pack("!i", -2))
    with pytest.raises(ProtocolError, match="negative"):
        decoder.next_frame()
    assert decoder.broken
    decoder = MultiprocessingCodec().decoder(
        max_message_size=10, require_crc=False, message_mode=False
    )
    decoder.feed_data(struct.pack("!i", 11))  # refused from the header, before the payload
    with pytest.raises(MessageTooLargeError):
        decoder.next_frame()
    decoder = MultiprocessingCodec().decoder(
        max_message_size=10, require_crc=False, message_mode=False
    )
    decoder.feed_data(bytes.fromhex("ffffffff 00000001 00000000"))  # 4 GiB, long header
    with pytest.raises(MessageTooLargeError):
        decoder.next_frame()
    with pytest.raises(MessageTooLargeError):
        MultiprocessingCodec().encode(b"x" * 11, crc=False, max_size=10)


def test_multiprocessing_windows_layout_is_one_pipe_message() -> None:
    codec = MultiprocessingCodec(message_mode=True)
    assert [bytes(p) for p in codec.encode(b"Hi", crc=False, max_size=None)] == [b"Hi"]
    decoder = codec.decoder(max_message_size=None, require_crc=False, message_mode=True)
    for piece, end in ((b"He", False), (b"llo", True), (b"!", True)):
        decoder.feed_data(piece)
        if end:
            decoder.message_end()
    assert decoder.next_frame().message == b"Hello"
    assert decoder.next_frame().message == b"!"
    assert decoder.next_frame() is None
    # Following the transport: a codec made by name picks the layout from the connection.
    follow = MultiprocessingCodec()
    follow.decoder(max_message_size=None, require_crc=False, message_mode=True)
    assert joined(follow.encode(b"Hi", crc=False, max_size=None)) == b"Hi"


# -- the other codecs' vectors ------------------------------------------------------------------


def test_npipes1_test_vector() -> None:
    codec = Npipes1Codec()
    assert joined(codec.encode("Hello", crc=True, max_size=None)) == NPIPES1_HELLO
    assert NPIPES1_HELLO.hex(" ") == "00 00 00 0d 00 00 00 05 48 65 6c 6c 6f f7 d1 89 82"
    decoder = codec.decoder(max_message_size=None, require_crc=True, message_mode=False)
    decoder.feed_data(NPIPES1_HELLO)
    frame = decoder.next_frame()
    assert (frame.message, frame.size, frame.crc) == ("Hello", 5, True)
    # Without a CRC the trailer is 0, and a receiver accepts it.
    no_crc = joined(codec.encode("Hello", crc=False, max_size=None))
    assert no_crc == NPIPES1_HELLO[:-4] + b"\0\0\0\0"
    assert decode_all(codec, no_crc) == ["Hello"]
    assert joined(codec.encode("", crc=False, max_size=None)).hex() == "00000008" + "0" * 16


def test_npipes1_bad_crc_spoils_that_message_only() -> None:
    bad = NPIPES1_HELLO[:-1] + bytes([NPIPES1_HELLO[-1] ^ 1])
    decoder = Npipes1Codec().decoder(max_message_size=None, require_crc=False, message_mode=False)
    decoder.feed_data(bad + NPIPES1_HELLO)
    with pytest.raises(ChecksumError):
        decoder.next_frame()
    assert not decoder.broken
    assert decoder.next_frame().message == "Hello"
    # crc required, but the message has none.
    decoder = Npipes1Codec().decoder(max_message_size=None, require_crc=True, message_mode=False)
    decoder.feed_data(joined(Npipes1Codec().encode("a", crc=False, max_size=None)) + NPIPES1_HELLO)
    with pytest.raises(ChecksumError, match="no CRC"):
        decoder.next_frame()
    assert decoder.next_frame().message == "Hello"
    # Two lengths that disagree: not a 1.x frame, framing is lost.
    decoder = Npipes1Codec().decoder(max_message_size=None, require_crc=False, message_mode=False)
    decoder.feed_data(bytes.fromhex("0000000e 00000005"))
    with pytest.raises(ProtocolError):
        decoder.next_frame()
    assert decoder.broken


def test_dotnet_test_vectors_and_limit() -> None:
    codec = DotnetCodec()
    assert joined(codec.encode("Hi", crc=False, max_size=None)).hex(" ") == "00 04 48 00 69 00"
    assert joined(codec.encode("😀", crc=False, max_size=None)).hex(" ") == "00 04 3d d8 00 de"
    assert decode_all(codec, bytes.fromhex("0004 4800 6900 0004 3dd8 00de 0000")) == [
        "Hi",
        "😀",
        "",
    ]
    assert len(joined(codec.encode("x" * 32767, crc=False, max_size=None))) == 2 + 65534
    with pytest.raises(MessageTooLargeError) as info:
        codec.encode("x" * 32768, crc=False, max_size=None)  # 65536 bytes: never truncated
    assert (info.value.size, info.value.limit) == (65536, 65535)
    with pytest.raises(MessageTooLargeError):
        codec.encode("x" * 6, crc=False, max_size=10)
    decoder = codec.decoder(max_message_size=10, require_crc=False, message_mode=False)
    decoder.feed_data(bytes.fromhex("000c"))
    with pytest.raises(MessageTooLargeError):
        decoder.next_frame()


def test_lines_codec_rules() -> None:
    codec = LinesCodec()
    assert joined(codec.encode("Hi", crc=False, max_size=None)) == b"Hi\n"
    assert joined(codec.encode("", crc=False, max_size=None)) == b"\n"
    with pytest.raises(ValueError, match="newline"):
        codec.encode("two\nlines", crc=False, max_size=None)
    with pytest.raises(MessageTooLargeError):
        codec.encode("x" * 11, crc=False, max_size=10)
    assert decode_all(codec, b"one\r\ntwo\n\nlast", eof=True) == ["one", "two", "", "last"]
    # A line above the limit fails as soon as the limit is passed, newline or not.
    decoder = codec.decoder(max_message_size=4, require_crc=False, message_mode=False)
    decoder.feed_data(b"12345")
    with pytest.raises(MessageTooLargeError):
        decoder.next_frame()
    assert decoder.broken
    assert decode_all(codec, b"1234\n", max_message_size=4) == ["1234"]  # newline not counted


def test_raw_codec_encodes_nothing_but_the_payload() -> None:
    codec = RawCodec()
    assert joined(codec.encode(b"\x00abc", crc=False, max_size=None)) == b"\x00abc"
    assert joined(codec.encode("é", crc=False, max_size=None)) == "é".encode()
    with pytest.raises(MessageTooLargeError):
        codec.encode(b"x" * 11, crc=False, max_size=10)


# Messages per codec for the chunking test, and whether the decoder keeps pipe messages.
CHUNKING: list[Any] = [
    pytest.param(MultiprocessingCodec(), [b"", b"a", pattern(70_000), b"b" * 300], False, id="mp"),
    pytest.param(
        MultiprocessingCodec(), [b"a", pattern(70_000), b"b" * 300], True, id="mp-windows"
    ),
    pytest.param(RawCodec(), [b"a", pattern(70_000), b"b" * 300, b"c"], True, id="raw-windows"),
    pytest.param(Npipes1Codec(), ["", "a", "x" * 70_000, "b" * 300], False, id="npipes1"),
    pytest.param(LinesCodec(), ["", "a", "x" * 70_000, "é" * 300], False, id="lines"),
    pytest.param(DotnetCodec(), ["", "a", "x" * 30_000, "😀" * 300], False, id="dotnet"),
]


@pytest.mark.parametrize(("codec", "messages", "message_mode"), CHUNKING)
@pytest.mark.parametrize("read", [1, 7, 4096, 65536, 1 << 30], ids=lambda n: f"reads-{n}")
def test_decoders_survive_any_chunking(
    codec: Any, messages: list[Any], message_mode: bool, read: int
) -> None:
    # Reads of any size through get_buffer/buffer_updated, messages taken out as they
    # complete (so the buffer is compacted and grown in between). With message_mode a
    # read never spans two messages and message_end marks each one's end, as on Windows.
    decoder = codec.decoder(max_message_size=None, require_crc=False, message_mode=message_mode)
    wires = [joined(codec.encode(m, crc=False, max_size=None)) for m in messages]
    if not message_mode:
        wires = [b"".join(wires)]
    got = []
    for wire in wires:
        pos = 0
        while pos < len(wire):
            with decoder.get_buffer() as buffer:
                size = min(len(buffer), read, len(wire) - pos)
                assert size > 0
                buffer[:size] = wire[pos : pos + size]
            decoder.buffer_updated(size)
            pos += size
            if message_mode and pos == len(wire):
                decoder.message_end()
            while (frame := decoder.next_frame()) is not None:
                got.append(frame.message)
    decoder.feed_eof()
    with pytest.raises(ConnectionClosedError) as info:
        decoder.next_frame()
    assert type(info.value) is ConnectionClosedError  # a clean end: nothing half-read
    assert decoder.idle
    check_messages(
        got, [m.encode() if codec.name == "raw" and isinstance(m, str) else m for m in messages]
    )


def test_decoders_at_the_end_of_the_stream() -> None:
    # raw: bytes not yet ended by a read or pipe message are the last message.
    decoder = RawCodec().decoder(max_message_size=None, require_crc=False, message_mode=True)
    decoder.feed_data(b"tail")
    assert decoder.next_frame() is None
    decoder.feed_eof()
    assert decoder.next_frame().message == b"tail"
    with pytest.raises(ConnectionClosedError):
        decoder.next_frame()
    # lines: a last line that is not UTF-8 is an error, not a message.
    decoder = LinesCodec().decoder(max_message_size=None, require_crc=False, message_mode=False)
    decoder.feed_data(b"ok\n\xff")
    decoder.feed_eof()
    assert decoder.next_frame().message == "ok"
    with pytest.raises(ProtocolError, match="UTF-8"):
        decoder.next_frame()
    # Framings with a length: the peer left mid-message.
    for codec, wire in [
        (Npipes1Codec(), NPIPES1_HELLO[:-1]),
        (MultiprocessingCodec(), b"\x00\x00\x00\x05abc"),
        (DotnetCodec(), b"\x00"),
    ]:
        decoder = codec.decoder(max_message_size=None, require_crc=False, message_mode=False)
        decoder.feed_data(wire)
        assert decoder.next_frame() is None
        assert not decoder.idle
        decoder.feed_eof()
        with pytest.raises(npipes.IncompleteMessageError):
            decoder.next_frame()


def test_raw_message_ends_survive_buffer_compaction() -> None:
    # Windows pipe messages queue up in the decoder; taking one out and then reading more
    # moves the rest to the front of the buffer: the queued ends must move with it.
    decoder = RawCodec().decoder(max_message_size=None, require_crc=False, message_mode=True)
    one, two, three = b"1" * 40_000, b"2" * 20_000, b"3" * 9_000
    for message in (one, two):
        decoder.feed_data(message)
        decoder.message_end()
    assert decoder.next_frame().message == one
    decoder.feed_data(three[:5_000])
    decoder.feed_data(three[5_000:])  # no room at the end: compacts
    decoder.message_end()
    assert decoder.next_frame().message == two
    assert decoder.next_frame().message == three
    assert decoder.next_frame() is None


def test_a_broken_decoder_stays_broken() -> None:
    decoder = DotnetCodec().decoder(max_message_size=2, require_crc=False, message_mode=False)
    decoder.feed_data(bytes.fromhex("0004 4800 6900"))
    with pytest.raises(MessageTooLargeError):
        decoder.next_frame()
    assert decoder.broken
    assert not decoder.idle
    with pytest.raises(ProtocolError, match="unusable"):
        decoder.next_frame()
    with pytest.raises(ProtocolError, match="unusable"):
        decoder.get_buffer()


def test_npipes1_text_encoding() -> None:
    # 1.x sent ASCII; anything else spoils that message only.
    wire = joined(Npipes1Codec().encode("é".encode(), crc=True, max_size=None))
    decoder = Npipes1Codec().decoder(max_message_size=None, require_crc=False, message_mode=False)
    decoder.feed_data(wire + NPIPES1_HELLO)
    with pytest.raises(ProtocolError, match="ascii"):
        decoder.next_frame()
    assert decoder.next_frame().message == "Hello"
    with pytest.raises(UnicodeEncodeError):
        Npipes1Codec().encode("é", crc=False, max_size=None)
    utf8 = Npipes1Codec(encoding="utf-8")
    assert decode_all(utf8, joined(utf8.encode("é", crc=True, max_size=None))) == ["é"]


def _reallocations(decoder: Any, chunks: Iterator[bytes], *, message_end: bool) -> int:
    """Feed ``chunks`` the way a transport does; count how often the read buffer was replaced."""
    count = 0
    previous = None
    for chunk in chunks:
        with decoder.get_buffer() as buffer:
            owner = buffer.obj
            size = min(len(buffer), len(chunk))
            buffer[:size] = chunk[:size]
        assert size == len(chunk), "the decoder handed out less room than a read brings"
        decoder.buffer_updated(size)
        if message_end:
            decoder.message_end()
        if owner is not previous:
            count += 1
            previous = owner
    return count


def _reads(total: int, tail: bytes = b"") -> Iterator[bytes]:
    """``total`` bytes in 4 KiB reads, then ``tail``."""
    for _ in range(total // 4096):
        yield b"x" * 4096
    if tail:
        yield tail


@pytest.mark.parametrize("framing", ["lines", "raw-windows"])
def test_decoder_buffer_grows_geometrically(framing: str) -> None:
    # A message whose size is not announced (a line; a pipe message on Windows) must not
    # grow the buffer by the 4 KiB each read asks for: that is quadratic copying, minutes
    # for 64 MiB (a regression test: it once was).
    total = MiB
    if framing == "lines":
        decoder = LinesCodec().decoder(max_message_size=None, require_crc=False, message_mode=False)
        count = _reallocations(decoder, _reads(total, b"\n"), message_end=False)
        assert decoder.next_frame().size == total
    else:
        codec = MultiprocessingCodec()
        decoder = codec.decoder(max_message_size=None, require_crc=False, message_mode=True)
        count = _reallocations(decoder, _reads(total), message_end=False)
        decoder.message_end()
        assert decoder.next_frame().size == total
    assert count <= 24, f"{count} buffers for one {total}-byte message"


# -- on the wire: what each framing writes -------------------------------------------------------

WIRE = [
    pytest.param("npipes1", "Hello", True, NPIPES1_HELLO, id="npipes1"),
    pytest.param("dotnet", "Hi", False, bytes.fromhex("00044800 6900"), id="dotnet"),
    pytest.param("lines", "Hi", False, b"Hi\n", id="lines"),
    pytest.param(
        "multiprocessing",
        b"Hi",
        False,
        b"Hi" if IS_WINDOWS else b"\x00\x00\x00\x02Hi",  # Windows: one pipe message, no prefix
        id="multiprocessing",
    ),
]


@pytest.mark.parametrize(("framing", "message", "crc", "wire"), WIRE)
def test_what_each_framing_writes(
    pipe_name: str, framing: str, message: Payload, crc: bool, wire: bytes
) -> None:
    # A raw receiver sees the bytes; and the framing's own receiver reads what raw writes.
    with pair(pipe_name, "raw", client_framing=framing) as (server, client):
        client.send(message, crc=crc, timeout=WAIT)
        if IS_WINDOWS:
            assert server.recv(timeout=WAIT) == wire  # one pipe message
        else:
            assert recv_total(server, len(wire)) == wire
    with pair(pipe_name, framing, client_framing="raw") as (server, client):
        client.send(wire, timeout=WAIT)
        got = server.recv(timeout=WAIT)
        assert got == (message if isinstance(message, str) else bytes(message))


# -- round trips, both directions, every framing ----------------------------------------------


@pytest.mark.parametrize("framing", [f for f in ALL_FRAMINGS if f != "raw"])
def test_round_trip_both_directions(pipe_name: str, framing: str) -> None:
    sent = [message for message, _ in ROUND_TRIPS[framing]]
    expected = [message for _, message in ROUND_TRIPS[framing]]
    with ThreadPoolExecutor(1) as pool, pair(pipe_name, framing) as (server, client):
        assert server.framing == client.framing == framing
        sending = pool.submit(send_all, client, sent)
        check_messages(recv_n(server, len(sent)), expected)
        sending.result(WAIT)
        receiving = pool.submit(recv_n, client, len(sent))
        send_all(server, sent)
        check_messages(receiving.result(WAIT), expected)


@pytest.mark.posix
def test_raw_on_posix_delivers_what_arrived(pipe_name: str) -> None:
    sent = [b"abc", BIG, "dé", b"xyz"]
    whole = b"".join(m.encode() if isinstance(m, str) else m for m in sent)
    with ThreadPoolExecutor(1) as pool, pair(pipe_name, "raw") as (server, client):
        sending = pool.submit(send_all, client, sent)
        assert recv_total(server, len(whole)) == whole
        sending.result(WAIT)
        receiving = pool.submit(recv_total, client, len(whole))
        send_all(server, sent)
        assert receiving.result(WAIT) == whole
        # The end of the stream: the bytes before it, then a clean close.
        server.send(b"tail", timeout=WAIT)
        server.close()
        assert recv_total(client, 4) == b"tail"
        with pytest.raises(ConnectionClosedError) as info:
            client.recv(timeout=WAIT)
        assert type(info.value) is ConnectionClosedError


@pytest.mark.windows
def test_raw_on_windows_keeps_pipe_messages(pipe_name: str) -> None:
    sent = [message for message, _ in ROUND_TRIPS["raw"]]
    expected = [message for _, message in ROUND_TRIPS["raw"]]
    with ThreadPoolExecutor(1) as pool, pair(pipe_name, "raw") as (server, client):
        sending = pool.submit(send_all, client, sent)  # BIG is 16 times the pipe buffer
        check_messages(recv_n(server, len(sent)), expected)
        sending.result(WAIT)
        receiving = pool.submit(recv_n, client, len(sent))
        send_all(server, sent)
        check_messages(receiving.result(WAIT), expected)


@pytest.mark.windows
def test_windows_skips_zero_length_pipe_messages(pipe_name: str) -> None:
    # The documented limit (docs/framings.md, platform notes): send(b"") writes nothing.
    with pair(pipe_name, "raw") as (server, client):
        client.send(b"", timeout=WAIT)
        client.send(b"after", timeout=WAIT)
        assert server.recv(timeout=WAIT) == b"after"


@pytest.mark.parametrize("framing", ALL_FRAMINGS)
def test_send_many_keeps_messages_apart(pipe_name: str, framing: str) -> None:
    sent = ["one", "two", "three"]
    expected: list[Any] = (
        sent if framing not in ("raw", "multiprocessing") else [m.encode() for m in sent]
    )
    with pair(pipe_name, framing) as (server, client):
        assert client.send_many(sent, timeout=WAIT) == 3
        if framing == "raw" and not IS_WINDOWS:
            assert recv_total(server, 11) == b"onetwothree"  # no boundaries on a stream
        else:
            for want in expected:  # one by one: a merged message fails at once, not at a timeout
                assert server.recv(timeout=WAIT) == want


@pytest.mark.slow
@pytest.mark.parametrize(
    "framing",
    [
        "npipes1",
        "multiprocessing",
        "lines",
        pytest.param("raw", marks=pytest.mark.windows),
    ],
)
def test_64_mib_messages(pipe_name: str, framing: str) -> None:
    size = 64 * MiB
    message: Payload = "x" * size if framing in ("npipes1", "lines") else pattern(size)
    with ThreadPoolExecutor(1) as pool, pair(pipe_name, framing) as (server, client):
        sending = pool.submit(client.send, message, timeout=120)
        got = server.recv(timeout=120)
        sending.result(120)
        assert len(got) == size
        assert got == message
        del got
        receiving = pool.submit(client.recv, timeout=120)
        server.send(message, timeout=120)
        got = receiving.result(120)
        assert len(got) == size
        assert got == message


@pytest.mark.parametrize("framing", ["multiprocessing", "npipes1", "lines", "dotnet"])
def test_recv_into_with_other_framings(pipe_name: str, framing: str) -> None:
    with pair(pipe_name, framing) as (server, client):
        client.send_many(["fits", "does not fit", "next"], timeout=WAIT)
        buffer = bytearray(8)
        size = server.recv_into(buffer, timeout=WAIT)
        assert buffer[:size] == b"fits"  # text as UTF-8, whatever the wire's encoding
        with pytest.raises(npipes.BufferTooSmallError, match="consumed"):
            server.recv_into(buffer, timeout=WAIT)
        # The message that did not fit is gone (with the v1 framing it would wait for recv).
        assert server.recv(timeout=WAIT) in ("next", b"next")


def test_peer_leaving_mid_message_is_incomplete(pipe_name: str) -> None:
    with pair(pipe_name, "npipes1", client_framing="raw") as (server, client):
        client.send(NPIPES1_HELLO + NPIPES1_HELLO[:10], timeout=WAIT)
        client.close()
        assert server.recv(timeout=WAIT) == "Hello"
        with pytest.raises(npipes.IncompleteMessageError):
            server.recv(timeout=WAIT)
        assert server.closed


# -- lines ---------------------------------------------------------------------------------------


def test_lines_on_the_wire(pipe_name: str) -> None:
    with pair(pipe_name, "lines", client_framing="raw", max_message_size=8) as (server, client):
        client.send(b"one\r\ntwo\n\n\xff\xfebad\nthree\n", timeout=WAIT)
        assert server.recv(timeout=WAIT) == "one"  # \r\n stripped
        assert server.recv(timeout=WAIT) == "two"
        assert server.recv(timeout=WAIT) == ""  # an empty line is a message
        with pytest.raises(ProtocolError, match="UTF-8"):
            server.recv(timeout=WAIT)
        assert not server.closed  # that line only
        assert server.recv(timeout=WAIT) == "three"
        client.send(b"12345678\n123456789\n", timeout=WAIT)
        assert server.recv(timeout=WAIT) == "12345678"  # exactly the limit
        with pytest.raises(MessageTooLargeError):
            server.recv(timeout=WAIT)
        assert server.closed
    with pair(pipe_name, "lines", client_framing="raw") as (server, client):
        client.send(b"first\nlast without newline", timeout=WAIT)
        client.close()
        assert server.recv(timeout=WAIT) == "first"
        assert server.recv(timeout=WAIT) == "last without newline"  # delivered at EOF
        with pytest.raises(ConnectionClosedError) as info:
            server.recv(timeout=WAIT)
        assert type(info.value) is ConnectionClosedError


def test_lines_refuses_a_message_with_a_newline(pipe_name: str) -> None:
    with pair(pipe_name, "lines") as (server, client):
        with pytest.raises(ValueError, match="newline"):
            client.send("a\nb", timeout=WAIT)
        with pytest.raises(ValueError, match="newline"):
            client.send_many(["fine", "not\nfine"], timeout=WAIT)
        client.send("still usable", timeout=WAIT)
        assert server.recv(timeout=WAIT) == "still usable"  # nothing of the refused went out


_SOCKET_CAT = """
import socket, sys
sock = socket.socket(socket.AF_UNIX)
sock.connect(sys.argv[1])
sock.sendall(sys.stdin.buffer.read())
while data := sock.recv(65536):
    sys.stdout.buffer.write(data)
"""


@pytest.mark.posix
def test_lines_with_a_shell_pipeline(pipe_name: str) -> None:
    # printf | (a plain AF_UNIX client, no npipes) | tr: lines in, lines out.
    with npipes.listen(pipe_name, framing="lines") as listener:
        shell = subprocess.Popen(
            [
                "sh",
                "-c",
                'printf "one\\r\\ntwo\\n" | "$0" -c "$1" "$2" | tr a-z A-Z',
                sys.executable,
                _SOCKET_CAT,
                listener.address,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        try:
            with listener.accept(timeout=WAIT) as conn:
                assert conn.recv(timeout=WAIT) == "one"
                assert conn.recv(timeout=WAIT) == "two"
                conn.send_many(["reply one", "reply two"], timeout=WAIT)
            out, err = shell.communicate(timeout=WAIT)
        finally:
            if shell.poll() is None:
                shell.kill()
                shell.communicate()
    assert shell.returncode == 0, err
    assert out == b"REPLY ONE\nREPLY TWO\n"


def _npipes_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "npipes", *args]


def test_cli_send_and_recv_with_lines_framing(pipe_name: str) -> None:
    # The test's end speaks lines: if the CLI used another framing, nothing would match.
    with npipes.listen(pipe_name, framing="lines") as listener:
        sent = subprocess.run(
            _npipes_cli(
                "send", "--framing", "lines", "--name", pipe_name, "--timeout", "30", "hi!"
            ),
            capture_output=True,
            text=True,
            timeout=WAIT,
            stdin=subprocess.DEVNULL,
        )
        assert sent.returncode == 0, sent.stderr
        with listener.accept(timeout=WAIT) as conn:
            assert conn.recv(timeout=WAIT) == "hi!"
        receiver = subprocess.Popen(
            _npipes_cli(
                "recv", "--framing", "lines", "--name", pipe_name, "--count", "2", "--timeout", "30"
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        try:
            with listener.accept(timeout=WAIT) as conn:
                conn.send_many(["first line", "second line"], timeout=WAIT)
            out, err = receiver.communicate(timeout=WAIT)
        finally:
            if receiver.poll() is None:
                receiver.kill()
                receiver.communicate()
    assert receiver.returncode == 0, err
    assert out.splitlines() == ["first line", "second line"]


# -- dotnet --------------------------------------------------------------------------------------


def test_dotnet_refuses_above_65535_bytes_and_stays_usable(pipe_name: str) -> None:
    with pair(pipe_name, "dotnet") as (server, client):
        with pytest.raises(MessageTooLargeError):
            client.send("é" * 32768, timeout=WAIT)
        client.send("𝄞" * 16383, timeout=WAIT)  # 65532 bytes of surrogate pairs
        assert server.recv(timeout=WAIT) == "𝄞" * 16383
    with pair(pipe_name, "dotnet", client_framing="raw") as (server, client):
        client.send(b"\x00\x03abc" + bytes.fromhex("0002 4100"), timeout=WAIT)
        with pytest.raises(ProtocolError, match="UTF-16"):  # an odd byte count
            server.recv(timeout=WAIT)
        assert server.recv(timeout=WAIT) == "A"


# -- npipes 1.x --------------------------------------------------------------------------------


def test_npipes1_checksums_on_the_wire(pipe_name: str) -> None:
    bad = NPIPES1_HELLO[:-1] + b"\x00"
    no_crc = joined(Npipes1Codec().encode("plain", crc=False, max_size=None))
    with pair(pipe_name, "npipes1", client_framing="raw") as (server, client):
        client.send(bad + NPIPES1_HELLO + no_crc + no_crc, timeout=WAIT)
        with pytest.raises(ChecksumError):
            server.recv(timeout=WAIT)
        assert server.recv(timeout=WAIT) == "Hello"  # the next message is intact
        assert server.recv(timeout=WAIT) == "plain"  # CRC 0: none, accepted
        with pytest.raises(ChecksumError):
            server.recv(timeout=WAIT, crc=True)  # unless one is required
        assert not server.closed


def test_npipes1_senders_meet_a_long_running_ipc_receiver(pipe_name: str) -> None:
    # Each sender connects, writes one 1.x frame, disconnects (as 1.x programs did).
    with IPC(pipe_name, framing="npipes1", timeout=WAIT) as ipc:
        first = start(framing_peers.npipes1_senders, pipe_name, ["vector"])
        assert finish(first) == 0  # gone before the receiver even looked
        rest = start(framing_peers.npipes1_senders, pipe_name, ["second", "crc:third", "vector"])
        try:
            got = [ipc.receive_message() for _ in range(3)]
            got.append(ipc.receive_message(crc=True))  # the vector carries a CRC-32
        finally:
            code = finish(rest)
        assert code == 0
        assert ipc.message == "Hello"
    assert got == ["Hello", "second", "crc:third", "Hello"]


# -- CPython's multiprocessing.connection as the peer -------------------------------------

STDLIB_SIZES = [*([] if IS_WINDOWS else [0]), 1, 1000, MiB]


def _echo_through(conn: npipes.Connection, sizes: list[int]) -> None:
    """Send ``pattern(size)`` for each size; the stdlib peer checks it and sends it back."""
    for size in sizes:
        conn.send(pattern(size), timeout=WAIT)
        back = conn.recv(timeout=WAIT)
        assert type(back) is bytes
        assert len(back) == size
        assert back == pattern(size)


@pytest.mark.parametrize("authkey", [None, KEY], ids=["no-authkey", "authkey"])
def test_stdlib_client_to_npipes_listener(pipe_name: str, authkey: bytes | None) -> None:
    with npipes.listen(pipe_name, framing="multiprocessing", authkey=authkey) as listener:
        proc = start(
            framing_peers.stdlib_client,
            listener.address,
            FAMILY,
            authkey,
            STDLIB_SIZES,
            False,
            IS_WINDOWS,  # on Windows it also sends a zero-length message, which is skipped
        )
        try:
            with listener.accept(timeout=WAIT) as conn:
                _echo_through(conn, STDLIB_SIZES)
                assert conn.recv(timeout=WAIT) == b"done"
        except BaseException:
            proc.kill()
            raise
    assert finish(proc) == 0


@pytest.mark.parametrize("authkey", [None, KEY], ids=["no-authkey", "authkey"])
def test_npipes_client_to_stdlib_listener(pipe_name: str, authkey: bytes | None) -> None:
    address = stdlib_address(pipe_name)
    proc = start(framing_peers.stdlib_listener, address, FAMILY, authkey, STDLIB_SIZES)
    try:
        with npipes.connect(
            address,
            framing="multiprocessing",
            authkey=authkey,
            timeout=WAIT,
            wait_for_listener=True,
        ) as conn:
            _echo_through(conn, STDLIB_SIZES)
            assert conn.recv(timeout=WAIT) == b"done"
    except BaseException:
        proc.kill()
        raise
    assert finish(proc) == 0


@pytest.mark.slow
@pytest.mark.parametrize("role", ["npipes-listens", "stdlib-listens"])
def test_stdlib_peer_64_mib(pipe_name: str, role: str) -> None:
    sizes = [64 * MiB]
    if role == "npipes-listens":
        with npipes.listen(pipe_name, framing="multiprocessing", authkey=KEY) as listener:
            proc = start(framing_peers.stdlib_client, listener.address, FAMILY, KEY, sizes)
            with listener.accept(timeout=WAIT) as conn:
                _echo_through(conn, sizes)
                assert conn.recv(timeout=WAIT) == b"done"
    else:
        address = stdlib_address(pipe_name)
        proc = start(framing_peers.stdlib_listener, address, FAMILY, KEY, sizes)
        with npipes.connect(
            address, framing="multiprocessing", authkey=KEY, timeout=WAIT, wait_for_listener=True
        ) as conn:
            _echo_through(conn, sizes)
            assert conn.recv(timeout=WAIT) == b"done"
    assert finish(proc, timeout=120) == 0


def test_wrong_key_fails_on_both_sides_with_a_stdlib_client(pipe_name: str) -> None:
    with npipes.listen(pipe_name, framing="multiprocessing", authkey=KEY) as listener:
        proc = start(framing_peers.stdlib_client, listener.address, FAMILY, b"wrong key", [], True)
        with pytest.raises(AuthenticationError):
            listener.accept(timeout=WAIT)
        assert finish(proc) == 0  # it got multiprocessing.AuthenticationError
        # The listener keeps serving: the right key still gets in.
        right = start(framing_peers.stdlib_client, listener.address, FAMILY, KEY, [5])
        with listener.accept(timeout=WAIT) as conn:
            _echo_through(conn, [5])
            assert conn.recv(timeout=WAIT) == b"done"
        assert finish(right) == 0


def test_wrong_key_fails_on_both_sides_with_a_stdlib_listener(pipe_name: str) -> None:
    address = stdlib_address(pipe_name)
    proc = start(framing_peers.stdlib_listener, address, FAMILY, KEY, [], True)
    with pytest.raises(AuthenticationError) as info:
        npipes.connect(
            address,
            framing="multiprocessing",
            authkey=b"wrong key",
            timeout=WAIT,
            wait_for_listener=True,
        )
    assert isinstance(info.value, PermissionError)
    assert finish(proc) == 0  # it got multiprocessing.AuthenticationError


# -- authkey with the default framing, between npipes processes ---------------------------


@pytest.mark.parametrize("right", [True, False], ids=["right-key", "wrong-key"])
def test_authkey_between_npipes_processes(pipe_name: str, right: bool) -> None:
    with npipes.listen(pipe_name, authkey=KEY) as listener:
        proc = start(
            framing_peers.npipes_auth_client, pipe_name, KEY if right else b"nope", not right
        )
        if right:
            with listener.accept(timeout=WAIT) as conn:
                assert conn.framing == "npipes"
                conn.send("proved", timeout=WAIT)
                assert conn.recv(timeout=WAIT) == "proved"
        else:
            with pytest.raises(AuthenticationError):
                listener.accept(timeout=WAIT)
    assert finish(proc) == 0


@pytest.mark.parametrize("framing", ["npipes", "multiprocessing"])
@pytest.mark.parametrize("listener_key", [KEY, b"other"], ids=["same-key", "other-key"])
def test_authkey_in_process_both_roles(pipe_name: str, framing: str, listener_key: bytes) -> None:
    with (
        ThreadPoolExecutor(1) as pool,
        npipes.listen(pipe_name, framing=framing, authkey=listener_key) as listener,
    ):
        connecting = pool.submit(
            npipes.connect, pipe_name, framing=framing, authkey=KEY, timeout=WAIT
        )
        if listener_key != KEY:
            with pytest.raises(AuthenticationError):
                listener.accept(timeout=WAIT)
            with pytest.raises(AuthenticationError):
                connecting.result(WAIT)
            return
        with listener.accept(timeout=WAIT) as server, connecting.result(WAIT) as client:
            client.send(b"in", timeout=WAIT)
            assert server.recv(timeout=WAIT) == b"in"


def _drive(exchange: Any, *incoming: bytes) -> list[bytes]:
    """Run a sans-I/O exchange: feed ``incoming`` whenever it waits; return what it sent."""
    sent: list[bytes] = []
    inbox = list(incoming)
    try:
        step = next(exchange)
        while True:
            if step is None:
                step = exchange.send(inbox.pop(0))
            else:
                sent.append(step)
                step = exchange.send(None)
    except StopIteration:
        return sent


@pytest.mark.parametrize(
    ("incoming", "error"),
    [
        ([b"hello"], "sent no challenge"),
        ([b"#CHALLENGE#" + b"x" * 19], "too short"),
        ([b"#CHALLENGE#{sha1}" + b"x" * 40], "unsupported digest"),
        ([b"#CHALLENGE#{sha256}" + b"x" * 40, b"#FAILURE#"], "rejected our authkey"),
    ],
    ids=["no-challenge", "short", "sha1", "rejected"],
)
def test_handshake_refuses_bad_challenges(incoming: list[bytes], error: str) -> None:
    from npipes._protocol import connect_side

    with pytest.raises(AuthenticationError, match=error):
        _drive(connect_side(KEY), *incoming)


def test_handshake_messages_match_the_stdlib() -> None:
    from npipes._protocol import accept_side, connect_side

    # What npipes answers to a 3.12+ challenge and to a legacy one.
    modern = b"{sha256}" + b"r" * 40
    legacy = b"r" * 20
    exchange = connect_side(KEY)
    assert next(exchange) is None
    answer = exchange.send(b"#CHALLENGE#" + modern)
    assert answer == b"{sha256}" + hmac.new(KEY, modern, "sha256").digest()
    exchange = connect_side(KEY)
    next(exchange)
    assert exchange.send(b"#CHALLENGE#" + legacy) == hmac.new(KEY, legacy, "md5").digest()
    # What it challenges with, and an answer in another allowed digest.
    exchange = accept_side(KEY)
    challenge = next(exchange)
    assert challenge.startswith(b"#CHALLENGE#{sha256}")
    assert len(challenge) == len(b"#CHALLENGE#{sha256}") + 40
    assert exchange.send(None) is None
    body = challenge[len(b"#CHALLENGE#") :]
    reply = exchange.send(b"{sha384}" + hmac.new(KEY, body, "sha384").digest())
    assert reply == b"#WELCOME#"
    with pytest.raises(TypeError, match="bytes"):
        next(accept_side("text"))  # type: ignore[arg-type]


def _legacy_peer(conn: npipes.Connection, key: bytes) -> bytes:
    """The client half of CPython 3.11's handshake, by hand: bare challenge, raw HMAC-MD5."""
    challenge = conn.recv(timeout=WAIT)
    assert isinstance(challenge, bytes)
    assert challenge.startswith(b"#CHALLENGE#{sha256}")
    conn.send(hmac.new(key, challenge[len(b"#CHALLENGE#") :], "md5").digest(), timeout=WAIT)
    verdict = conn.recv(timeout=WAIT)
    if verdict != b"#WELCOME#":
        return verdict
    ours = os.urandom(20)
    conn.send(b"#CHALLENGE#" + ours, timeout=WAIT)
    answer = conn.recv(timeout=WAIT)
    assert answer == hmac.new(key, ours, "md5").digest()  # a bare 16-byte HMAC-MD5
    conn.send(b"#WELCOME#", timeout=WAIT)
    return verdict


@pytest.mark.parametrize("framing", ["npipes", "multiprocessing"])
def test_authkey_speaks_the_legacy_md5_handshake(pipe_name: str, framing: str) -> None:
    # Python 3.11's stdlib is the real peer on Linux and 3.13's under Wine; this emulates
    # a pre-3.12 peer on both, byte for byte.
    with (
        ThreadPoolExecutor(1) as pool,
        npipes.listen(pipe_name, framing=framing, authkey=KEY) as listener,
    ):
        with npipes.connect(pipe_name, framing=framing, timeout=WAIT) as legacy:
            accepting = pool.submit(listener.accept, timeout=WAIT)
            assert _legacy_peer(legacy, KEY) == b"#WELCOME#"
            with accepting.result(WAIT) as conn:
                conn.send(b"in", timeout=WAIT)
                assert legacy.recv(timeout=WAIT) == b"in"
        with npipes.connect(pipe_name, framing=framing, timeout=WAIT) as legacy:
            accepting = pool.submit(listener.accept, timeout=WAIT)
            assert _legacy_peer(legacy, b"not the key") == b"#FAILURE#"
            with pytest.raises(AuthenticationError):
                accepting.result(WAIT)


def test_a_client_without_the_key_cannot_hang_an_authenticating_listener(
    pipe_name: str,
) -> None:
    # A client that never answers the challenge: accept gives up within its timeout.
    with (
        npipes.listen(pipe_name, authkey=KEY) as listener,
        npipes.connect(pipe_name, timeout=WAIT) as silent,
    ):
        with pytest.raises(npipes.PipeTimeoutError):
            listener.accept(timeout=0.5)
        assert silent.recv(timeout=WAIT).startswith(b"#CHALLENGE#{sha256}")


# -- your own codec: the example of docs/framings.md ----------------------------------------


def _doc_example() -> dict[str, Any]:
    text = DOC.read_text(encoding="utf-8")
    found = re.search(r"<!-- example: tiny-codec[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert found, "docs/framings.md lost its codec example"
    namespace: dict[str, Any] = {"__name__": "framings_doc_example"}
    exec(compile(found.group(1), str(DOC), "exec"), namespace)
    return namespace


def test_docs_codec_example_through_the_sync_api(pipe_name: str) -> None:
    codec_type = _doc_example()["TinyCodec"]
    codec = codec_type()
    with pair(pipe_name, codec) as (server, client):
        assert server.framing == "tiny"
        client.send_many([b"", "two", bytes(range(255))], timeout=WAIT)
        assert recv_n(server, 3) == [b"", b"two", bytes(range(255))]
        with pytest.raises(MessageTooLargeError):
            client.send(bytes(256), timeout=WAIT)
        server.send(b"back", timeout=WAIT)
        buffer = bytearray(10)
        assert client.recv_into(buffer, timeout=WAIT) == 4
        assert buffer[:4] == b"back"
        server.close()
        with pytest.raises(ConnectionClosedError):
            client.recv(timeout=WAIT)
    # Its options are checked like a built-in framing's.
    with pytest.raises(ValueError, match="no checksum"):
        npipes.listen(pipe_name, framing=codec_type(), crc=True)
    with pytest.raises(ValueError, match="not tiny"):
        npipes.listen(pipe_name, framing=codec_type(), authkey=KEY)


def test_docs_codec_example_through_aio(pipe_name: str) -> None:
    codec_type = _doc_example()["TinyCodec"]

    async def main() -> None:
        async with await aio.listen(pipe_name, framing=codec_type()) as listener:
            connecting = asyncio.ensure_future(
                aio.connect(pipe_name, framing=codec_type(), timeout=WAIT)
            )
            async with await listener.accept(timeout=WAIT) as server, await connecting as client:
                await client.send("hello", timeout=WAIT)
                await client.send(bytes(range(200)), timeout=WAIT)
                assert await server.recv(timeout=WAIT) == b"hello"
                assert await server.recv(timeout=WAIT) == bytes(range(200))
                await server.send(b"", timeout=WAIT)
                assert await client.recv(timeout=WAIT) == b""

    run(main())


class _ChunkCodec:
    """A codec of our own: bytes as they are, one pipe message each (message_based, like raw)."""

    name = "chunk"
    supports_crc = False
    supports_auth = False
    message_based = True

    def encode(self, data: Any, *, crc: bool, max_size: int | None) -> list[bytes]:
        return [bytes(data)]

    def decoder(self, **options: Any) -> Any:
        return RawCodec().decoder(**options)


@pytest.mark.windows
def test_aio_on_windows_refuses_message_based_codecs(pipe_name: str) -> None:
    for framing in [*sorted(STREAM_ONLY_ON_WINDOWS_AIO), _ChunkCodec()]:
        with pytest.raises(ValueError, match="boundaries"):
            run(aio.listen(pipe_name, framing=framing))
        with pytest.raises(ValueError, match="boundaries"):
            run(aio.connect(pipe_name, framing=framing, timeout=1))


# -- every framing through npipes.aio (against a sync peer) --------------------------------


def _sync_peer(name: str, framing: str, count: int, total: int) -> list[Any]:
    """Connect, receive ``count`` messages (or ``total`` raw bytes), echo them back."""
    with npipes.connect(name, framing=framing, timeout=WAIT) as conn:
        if framing == "raw" and not IS_WINDOWS:
            data = recv_total(conn, total)
            conn.send(data, timeout=WAIT)
            return [data]
        got = recv_n(conn, count)
        send_all(conn, got)
        with contextlib.suppress(ConnectionClosedError):
            conn.recv(timeout=WAIT)  # until the aio side closes
        return got


@pytest.mark.parametrize("framing", ALL_FRAMINGS)
def test_every_framing_through_aio(pipe_name: str, framing: str) -> None:
    if IS_WINDOWS and framing in STREAM_ONLY_ON_WINDOWS_AIO:
        with pytest.raises(ValueError, match="sync API"):
            run(aio.listen(pipe_name, framing=framing))
        return
    sent = [message for message, _ in ROUND_TRIPS[framing]]
    expected = [message for _, message in ROUND_TRIPS[framing]]
    whole = b"".join(m for m in expected if isinstance(m, bytes))

    async def main() -> list[Any]:
        async with await aio.listen(pipe_name, framing=framing) as listener:
            peer = asyncio.ensure_future(
                asyncio.to_thread(_sync_peer, pipe_name, framing, len(sent), len(whole))
            )
            async with await listener.accept(timeout=WAIT) as conn:
                assert conn.framing == framing
                for message in sent:
                    await conn.send(message, timeout=WAIT)
                if framing == "raw":  # POSIX: pieces, only their concatenation counts
                    back = b""
                    while len(back) < len(whole):
                        back += await conn.recv(timeout=WAIT)
                    assert back == whole
                else:
                    check_messages([await conn.recv(timeout=WAIT) for _ in sent], expected)
            return await peer

    got = run(main())
    if framing == "raw":
        assert got == [whole]
    else:
        check_messages(got, expected)


@pytest.mark.parametrize("framing", ["npipes", "multiprocessing"])
@pytest.mark.parametrize("client_key", [KEY, b"wrong"], ids=["same-key", "wrong-key"])
def test_authkey_through_aio(pipe_name: str, framing: str, client_key: bytes) -> None:
    if IS_WINDOWS and framing in STREAM_ONLY_ON_WINDOWS_AIO:
        pytest.skip("aio on Windows refuses the multiprocessing framing (asserted elsewhere)")

    def client() -> bytes | str:
        with npipes.connect(pipe_name, framing=framing, authkey=client_key, timeout=WAIT) as c:
            c.send(b"ping", timeout=WAIT)
            return c.recv(timeout=WAIT)

    async def main() -> None:
        async with await aio.listen(pipe_name, framing=framing, authkey=KEY) as listener:
            peer = asyncio.ensure_future(asyncio.to_thread(client))
            if client_key != KEY:
                with pytest.raises(AuthenticationError):
                    await listener.accept(timeout=WAIT)
                with pytest.raises(AuthenticationError):
                    await peer
                return
            async with await listener.accept(timeout=WAIT) as conn:
                assert await conn.recv(timeout=WAIT) == b"ping"
                await conn.send(b"pong", timeout=WAIT)
                assert await peer == b"pong"

    run(main())


@pytest.mark.posix
def test_aio_multiprocessing_with_a_stdlib_client(pipe_name: str) -> None:
    def stdlib_side(address: str) -> bytes:
        with multiprocessing.connection.Client(address, FAMILY, authkey=KEY) as conn:
            conn.send_bytes(conn.recv_bytes() + b"!")
            return conn.recv_bytes()

    async def main() -> None:
        async with await aio.listen(pipe_name, framing="multiprocessing", authkey=KEY) as listener:
            peer = asyncio.ensure_future(asyncio.to_thread(stdlib_side, listener.address))
            async with await listener.accept(timeout=WAIT) as conn:
                await conn.send(BIG, timeout=WAIT)
                assert await conn.recv(timeout=WAIT) == BIG + b"!"
                await conn.send(b"", timeout=WAIT)
                assert await peer == b""

    run(main())


def test_serve_with_a_framing(pipe_name: str) -> None:
    # npipes.serve (threads) takes framing= like listen.
    def handler(conn: npipes.Connection) -> None:
        for line in conn:
            conn.send(line.upper(), timeout=WAIT)

    with (
        npipes.serve(pipe_name, handler, framing="lines") as server,
        npipes.connect(pipe_name, framing="lines", timeout=WAIT) as conn,
    ):
        assert server.address
        conn.send("shout", timeout=WAIT)
        assert conn.recv(timeout=WAIT) == "SHOUT"
