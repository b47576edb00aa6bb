"""Fuzz harnesses: one function per decoder and one for the connection core.

Each harness takes the fuzzer's bytes and reads them as a small program (a
byte per operation, then its arguments): wire bytes to send (raw, or a whole
message encoded by the framing itself so CRCs and lengths are right), how to
deliver them (``feed_data``, or ``get_buffer``/``buffer_updated`` in chunks),
message ends, end of stream, and the calls a front end makes. The invariant
(issue 11 §2): every input ends in messages or an ``npipes.NpipesError``,
never another exception, never a hang (every loop here is bounded, and a
decoder that keeps answering None after the end of stream is a finding), and
never a buffer beyond a bound derived from the limits (see ``_buffer_bound``).

A violation raises :class:`Finding`; any exception that is not an
``NpipesError`` escapes as itself. Both are what atheris reports as a crash,
and what ``tests/test_fuzz_corpus.py`` fails on. No atheris here: the corpus
test replays inputs through these same functions in the normal suite.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Generator
from typing import Any

from npipes import _frame
from npipes._auth import MAX_HANDSHAKE_MESSAGE, accept_side, connect_side
from npipes._crc import crc32
from npipes._frame import _HEADER, _TRAILER, READ_BUFFER_SIZE, SMALL_FRAME, FrameDecoder
from npipes._framings import (
    DotnetCodec,
    LinesCodec,
    MultiprocessingCodec,
    Npipes1Codec,
    NpipesCodec,
    RawCodec,
)
from npipes._protocol import ITEM_COST, READ_AHEAD, ConnectionCore, State
from npipes.errors import (
    ConnectionClosedError,
    MessageTooLargeError,
    NpipesError,
    PipeTimeoutError,
)

__all__ = ["HARNESSES", "KNOWN", "KNOWN_BUGS", "LIMIT", "Finding"]

LIMIT = 64 * 1024
"""The harness's max_message_size (some inputs pick a tiny one, or change it mid-stream)."""
_SLACK = 64  # headers, trailers: a few bytes a buffer may hold beyond a payload


class Finding(AssertionError):
    """An input broke an invariant (not an npipes error, not a crash of the harness)."""


KNOWN_BUGS: dict[str, str] = {}
"""Bugs found and not yet fixed in src/. A check for one raises :class:`Finding` unless
its id is in ``NPIPES_FUZZ_TOLERATE`` (comma-separated): run.py tolerates these so CI
fuzzing keeps looking for new ones; the corpus test tolerates none."""


def _bug(bug: str, message: str) -> None:
    if bug not in os.environ.get("NPIPES_FUZZ_TOLERATE", "").split(","):
        raise Finding(f"{message} [{bug}]")


class _Input:
    """The fuzzer's bytes, read front to back; reads past the end give zeros."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def more(self) -> bool:
        return self.pos < len(self.data)

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def u16(self) -> int:
        return self.byte() | self.byte() << 8

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return chunk


def _big_payload(inp: _Input) -> bytes:
    """Up to 64 KiB from a few input bytes (a pattern repeated): large frames need it."""
    size = inp.u16()
    pattern = inp.take(inp.byte() % 16 + 1) or b"\0"
    return (pattern * (size // len(pattern) + 1))[:size]


def _limit_choice(inp: _Input) -> int:
    """64 KiB mostly; a tiny limit sometimes (the handshake's 256, or 0..63)."""
    pick = inp.byte()
    if pick < 200:
        return LIMIT
    if pick < 230:
        return MAX_HANDSHAKE_MESSAGE
    return pick & 0x3F


def _buffer_bound(limit: int, fed: int) -> int:
    """The most memory one decoder buffer may hold, from the code's own rules.

    ``FrameDecoder``: a 64 KiB read buffer that ``feed_data`` grows to the
    bytes kept plus the chunk, and a payload object of the frame's length,
    which is at most the limit. The simple decoders: a 64 KiB buffer that
    grows to what a message needs (at most limit + header) or geometrically
    with what was fed (at most twice that). Nothing may follow a length a
    peer announced beyond the limit.
    """
    return 2 * (max(READ_BUFFER_SIZE, limit + _SLACK) + fed)


def _check_memory(decoder: Any, limit: int, fed: int) -> None:
    bound = _buffer_bound(limit, fed)
    for attr in ("_buf", "_target"):
        buf = getattr(decoder, attr, None)
        if buf is None or (attr == "_target" and getattr(decoder, "_borrowed", False)):
            continue
        size = memoryview(buf).nbytes
        if size > bound:
            raise Finding(
                f"{type(decoder).__name__}.{attr} holds {size} bytes after {fed} bytes fed"
                f" with max_message_size {limit}; the bound is {bound}"
            )


# -- the decoders ------------------------------------------------------------------


def _call(fn: Callable[[], Any]) -> Any:
    """Run one decoder call; an NpipesError is an allowed outcome (returned, not raised)."""
    try:
        return fn()
    except NpipesError as exc:
        return exc


class _Wire:
    """Bytes on their way to a decoder: appended by the program, delivered in chunks."""

    def __init__(self) -> None:
        self.pending = bytearray()
        self.fed = 0
        self.eof = False  # the stream ended: a transport reads nothing after that
        self.errors = 0  # npipes errors raised by calls made through ``call``
        self.frames: list[Any] = []  # frames a read had to take out first (full buffer)

    def call(self, fn: Callable[[], Any]) -> Any:
        result = _call(fn)
        if isinstance(result, NpipesError):
            self.errors += 1
        return result

    def take(self, n: int) -> bytes:
        if self.eof:
            return b""
        chunk = bytes(self.pending[:n])
        del self.pending[:n]
        self.fed += len(chunk)
        return chunk

    def deliver_feed(self, decoder: Any, n: int) -> None:
        chunk = self.take(n)
        if chunk:
            self.call(lambda: decoder.feed_data(chunk))

    def deliver_read(self, decoder: Any, n: int) -> None:
        """One transport read: get_buffer, copy up to ``n`` bytes, buffer_updated."""

        def read() -> None:
            if self.eof:
                return
            view = decoder.get_buffer()
            if not isinstance(view, memoryview) or view.readonly:
                raise Finding(f"get_buffer returned {type(view).__name__}, not a writable view")
            if len(view) == 0 and self.pending and n:
                # Only a buffer full of whole frames not yet taken may leave no room
                # (FrameDecoder; asyncio's BufferedProtocol would raise RuntimeError):
                # then the next frame must come out without more bytes.
                frame = decoder.next_frame()
                if frame is None:
                    _bug("empty-get-buffer", "get_buffer returned an empty view, no frame is whole")
                    return
                self.frames.append(frame)
                return
            chunk = self.take(min(n, len(view)))
            count = len(chunk)
            view[:count] = chunk
            if count:
                decoder.buffer_updated(count)

        self.call(read)


def _drain_after_eof(
    next_frame: Callable[[], Any],
    broken: Callable[[], bool],
    bound: int,
    what: str,
    frames: list[Any] | None = None,
) -> int:
    """After the end of stream, calls must end in ConnectionClosedError, or in a fatal
    error that every later call repeats (``broken``). Returns the number of other
    npipes errors on the way; appends the frames to ``frames``."""
    errors = 0
    for _ in range(bound):
        try:
            got = next_frame()
        except ConnectionClosedError:
            try:
                again = next_frame()
            except NpipesError:
                return errors
            raise Finding(
                f"{what}: after the end was reported, a call returned {again!r}"
            ) from None
        except NpipesError:
            if broken():
                try:
                    again = next_frame()
                except NpipesError:
                    return errors + 1
                raise Finding(f"{what}: after a fatal error, a call returned {again!r}") from None
            errors += 1
            continue
        if got is None:
            raise Finding(f"{what}: next_frame returned None after the end of stream (a hang)")
        if frames is not None:
            frames.append(got)
    raise Finding(f"{what}: still returning frames after {bound} calls past the end of stream")


def _canonical(message: bytes | str, encoding: str) -> bytes:
    return message.encode(encoding) if isinstance(message, str) else bytes(message)


def _run_decoder(
    make: Callable[[int], Any],
    data: bytes,
    encode: Callable[..., Any],
    encoding: str | None,
    strip_cr: bool = False,
) -> None:
    """Drive one decoder (see the module docstring). ``encoding``: how the framing sends
    ``str`` (for the round-trip check), or None where the transport, not the bytes,
    makes the message boundaries (raw): no round-trip check there. ``strip_cr``: a
    trailing CR is not part of the message (lines)."""
    inp = _Input(data)
    # Round trip: a program of whole messages only that raised no error must get back
    # exactly the messages it sent, in order (canonical bytes: str in the framing's encoding).
    sent: list[bytes] = []
    exact = encoding is not None
    limit = _limit_choice(inp)
    max_limit = limit
    decoder = make(limit)
    wire = _Wire()
    frames = 0
    while inp.more():
        op = inp.byte() % 13
        if op == 0:  # raw wire bytes
            wire.pending += inp.take(inp.byte())
            exact = False
        elif op in (1, 12):  # a whole message, encoded by the framing (12: a large one)
            if op == 1:
                size = inp.byte() | (inp.byte() & 0x3) << 8
                text = inp.byte() & 1
                payload = inp.take(size)
            else:
                payload, text = _big_payload(inp), 0
            message: bytes | str = payload.decode("latin-1") if text else payload
            try:
                parts = encode(message, crc=bool(inp.byte() & 1), max_size=None)
            except (NpipesError, ValueError, UnicodeError):
                continue  # the framing cannot send it (non-ASCII for npipes1, a newline...)
            for part in parts:
                wire.pending += memoryview(part).cast("B")
            if encoding is not None and not wire.eof:  # (after the end nothing is read)
                canonical = _canonical(message, encoding)
                sent.append(canonical[:-1] if canonical.endswith(b"\r") and strip_cr else canonical)
        elif op == 2:
            wire.deliver_feed(decoder, inp.u16())
        elif op in (3, 4):
            wire.deliver_read(decoder, inp.u16())
        elif op == 5:
            wire.call(decoder.message_end)
        elif op in (6, 7):
            for _ in range(inp.byte() % 8 + 1):
                got = wire.call(decoder.next_frame)
                if got is None or isinstance(got, NpipesError):
                    break
                frames += 1
                wire.frames.append(got)
        elif op == 8:  # one recv_into call: reads until a frame is whole, or it stops
            buf = bytearray(inp.u16() % (LIMIT + 2))
            got = wire.call(lambda b=buf: decoder.next_frame_into(b))  # type: ignore[misc]
            for _ in range(inp.byte() % 4):
                if got is not None:
                    break
                wire.deliver_read(decoder, inp.u16())
                got = wire.call(lambda b=buf: decoder.next_frame_into(b))  # type: ignore[misc]
            if isinstance(got, tuple):
                frames += 1
                payload = bytes(buf[: got[0]])  # the payload as sent: UTF-8 for str (the API)
                if got[1] and encoding not in (None, "utf-8", "ascii"):
                    exact = False  # recv_into of a dotnet str gives UTF-8, not UTF-16
                wire.frames.append(payload)
            wire.call(decoder.release_buffer)
        elif op == 9:
            wire.deliver_feed(decoder, len(wire.pending))  # what was sent before the close
            wire.eof = True
            wire.call(decoder.feed_eof)
        elif op == 10:  # the handshake narrows the limit, then restores it
            decoder.max_message_size = (
                MAX_HANDSHAKE_MESSAGE if decoder.max_message_size == limit else limit
            )
        elif op == 11:
            decoder.broken, decoder.idle  # noqa: B018 - properties must not raise
            if isinstance(decoder, FrameDecoder):
                decoder.bytes_needed, decoder.buffered  # noqa: B018
        max_limit = max(max_limit, decoder.max_message_size or 0)
        _check_memory(decoder, max_limit, wire.fed)
        if frames > wire.fed + 16:
            raise Finding(f"{frames} frames out of {wire.fed} bytes: messages from nothing")
    # The peer sends the rest and closes.
    wire.deliver_feed(decoder, len(wire.pending))
    wire.call(decoder.message_end)
    wire.call(decoder.feed_eof)
    _check_memory(decoder, max_limit, wire.fed)
    last: list[Any] = []
    errors = _drain_after_eof(
        decoder.next_frame,
        lambda: bool(decoder.broken),
        wire.fed + 16,
        type(decoder).__name__,
        last,
    )
    received = [
        _canonical(item if isinstance(item, bytes) else item.message, encoding or "utf-8")
        for item in wire.frames + last
    ]
    if exact and not errors and not wire.errors and received != sent:
        raise Finding(
            f"{type(decoder).__name__}: sent {len(sent)} messages and no error was raised,"
            f" but received {len(received)} that differ: {_diff(sent, received)}"
        )


def _diff(sent: list[bytes], received: list[bytes]) -> str:
    for index, (a, b) in enumerate(zip(sent, received, strict=False)):
        if a != b:
            return f"message {index}: sent {a[:40]!r} ({len(a)} B), got {b[:40]!r} ({len(b)} B)"
    return f"the first {min(len(sent), len(received))} agree"


def _decoder_harness(
    codec: Any, message_mode: bool, encoding: str | None
) -> Callable[[bytes], None]:
    def harness(data: bytes) -> None:
        require_crc = bool(data[:1]) and data[0] & 0x80 != 0
        _run_decoder(
            lambda limit: codec.decoder(
                max_message_size=limit, require_crc=require_crc, message_mode=message_mode
            ),
            data[1:],
            codec.encode,
            encoding,
            strip_cr=isinstance(codec, LinesCodec),
        )

    return harness


# -- the connection core ----------------------------------------------------------------

_CODECS: list[tuple[Callable[[], Any], bool]] = [
    (NpipesCodec, False),
    (lambda: MultiprocessingCodec(message_mode=False), False),
    (lambda: MultiprocessingCodec(message_mode=True), True),
    (Npipes1Codec, False),
    (RawCodec, False),
    (RawCodec, True),
    (LinesCodec, False),
    (DotnetCodec, False),
]

_KEY = b"fuzz-key"


def _core_harness(data: bytes) -> None:
    inp = _Input(data)
    make, message_mode = _CODECS[inp.byte() % len(_CODECS)]
    codec = make()
    setup = inp.byte()
    crc = codec.supports_crc and bool(setup & 1)
    authenticating = codec.supports_auth and bool(setup & 2)
    limit = _limit_choice(inp)
    core = ConnectionCore(
        codec,
        crc=crc,
        max_message_size=limit,
        message_mode=message_mode,
        name="fuzz",
        address=None,
        authenticating=authenticating,
    )
    decoder = core._decoder
    wire = _Wire()
    handshake: Generator[bytes | None, bytes | str | None, None] | None = None
    waiting = False  # the handshake waits for a message
    handshake_started = False  # a driver runs it once, first (authenticating=True)
    steps = 0
    drained = [False]  # see _check_core

    def crc_arg() -> bool | None:
        pick = inp.byte() % 3
        if pick == 2 and not codec.supports_crc:
            return None  # crc=True is a caller's mistake (ValueError) for this framing
        return (None, False, True)[pick]

    def read(n: int, message_end: bool) -> None:
        def go() -> None:
            if wire.eof:
                return
            view = core.get_buffer()
            chunk = wire.take(min(n, len(view)))
            count = len(chunk)
            view[:count] = chunk
            if count:
                core.buffer_updated(count, message_end)

        _call(go)

    def proactor_read(n: int) -> None:
        """One read as asyncio's proactor transport delivers it (Windows): up to 64 KiB,
        fed through get_buffer/buffer_updated until all is in, decoding after each part
        (what npipes.aio's protocol does in buffer_updated), even once reading is paused.
        Reading resumes (and a read's data is delivered) only once decoding stops for
        want of bytes with budget left (npipes.aio ``took``)."""
        core.decode_available()
        if not core.wants_data() or wire.eof or core.state is not State.OPEN:
            return
        data = wire.take(min(n, 65536))
        while data and core.state is State.OPEN:  # not open: npipes.aio aborts the transport
            view = _call(core.get_buffer)
            if isinstance(view, NpipesError):
                return  # the protocol raised: asyncio aborts the connection
            if not len(view):  # asyncio: RuntimeError('get_buffer() returned an empty buffer')
                raise Finding("ConnectionCore.get_buffer returned an empty view mid-read")
            count = min(len(data), len(view))
            view[:count] = data[:count]
            data = data[count:]
            core.buffer_updated(count)
            core.decode_available()
            _check_core(core, decoder, limit, wire.fed, drained)

    while inp.more():
        op = inp.byte() % 18
        if op == 0:
            wire.pending += inp.take(inp.byte())
        elif op in (1, 14):  # a message encoded by the framing (14: a large one)
            if op == 1:
                size = inp.byte() | (inp.byte() & 0x3) << 8
                payload = inp.take(size)
            else:
                payload = _big_payload(inp)
            try:
                parts = codec.encode(payload, crc=bool(inp.byte() & 1), max_size=None)
            except (NpipesError, ValueError):
                continue
            for part in parts:
                wire.pending += memoryview(part).cast("B")
        elif op == 2:
            past_budget, size, message_end = inp.byte() & 1, inp.u16(), inp.byte() & 1
            if core.wants_data() or past_budget:  # a driver may read past the budget once
                read(size, bool(message_end))
        elif op == 3:
            chunk = wire.take(inp.u16())
            if chunk:
                _call(lambda c=chunk: core.receive_data(c))  # type: ignore[misc]
        elif op == 4:
            arg = crc_arg()
            _call(lambda a=arg: core.next_frame(a))  # type: ignore[misc]
        elif op == 5:
            # One recv_into call: reads until a message is whole, or it stops.
            buf = memoryview(bytearray(inp.u16() % (LIMIT + 2)))
            arg, direct = crc_arg(), bool(inp.byte() & 1)
            into = functools.partial(core.next_message_into, buf, arg, direct=direct)
            got = _call(into)
            for _ in range(inp.byte() % 4):
                if got is not None:
                    break
                read(inp.u16(), True)
                got = _call(into)
            core.release_buffer()
        elif op == 6:
            arg = crc_arg()
            _call(lambda a=arg: core.take_ready(inp.byte() % 8 + 1, a))  # type: ignore[misc]
        elif op == 7:
            core.decode_available()
        elif op == 8:
            core.message_ready()
            core.closed  # noqa: B018
        elif op == 9:  # the peer's close reaches the driver after what it sent before
            while wire.pending and core.state is State.OPEN and core.wants_data():
                before = len(wire.pending)
                read(len(wire.pending), True)
                if len(wire.pending) == before:
                    break
            if not wire.pending:
                wire.eof = True
                core.receive_eof()
        elif op == 10 and authenticating and not handshake_started:
            side = accept_side if inp.byte() & 1 else connect_side
            handshake, handshake_started = core.handshake(side(_KEY)), True
            waiting = _step(handshake, None)
        elif op == 11 and handshake is not None and waiting:
            got = _call(lambda: core.next_message())
            if got is not None and not isinstance(got, NpipesError):
                waiting = _step(handshake, got)
                if not waiting:
                    handshake = None
        elif op == 12:
            exc = PipeTimeoutError("fuzz: a receive timed out")
            want = inp.byte()
            view = None if wire.eof or not want else _call(core.get_buffer)
            if isinstance(view, memoryview):
                chunk = wire.take(min(want, len(view)))
                view[: len(chunk)] = chunk
                exc.npipes_received = len(chunk)  # type: ignore[attr-defined]
            _call(lambda e=exc: core.recv_failed(e))  # type: ignore[misc]
            drained[0] = True
        elif op == 13:  # sending; a newline is a caller's mistake with lines (ValueError)
            try:
                _call(lambda: core.encode(inp.take(inp.byte()), crc_arg()))
            except ValueError as exc:
                if not isinstance(codec, LinesCodec):
                    raise Finding(f"encode raised {exc!r}") from exc
        elif op == 16:  # raw wire bytes, a pattern repeated (many small frames at once)
            wire.pending += _big_payload(inp)
        elif op == 17:
            proactor_read(inp.u16())
        elif op == 15:  # a batch to send, then how its write ended
            batch = [inp.take(inp.byte() % 32) for _ in range(inp.byte() % 4)]
            try:
                _call(functools.partial(core.encode_many, batch, crc_arg()))
            except ValueError as exc:
                if not isinstance(codec, LinesCodec):
                    raise Finding(f"encode_many raised {exc!r}") from exc
            pick = inp.byte() % 5
            failure: BaseException = (
                PipeTimeoutError("fuzz: a send timed out"),
                PipeTimeoutError("fuzz: a send timed out"),
                ConnectionClosedError("fuzz: the peer left"),
                MessageTooLargeError("fuzz: too large for the OS", size=1, limit=0),
                KeyboardInterrupt(),
            )[pick]
            if pick == 1:
                failure.partial = True  # type: ignore[attr-defined]
            core.send_failed(failure, started=bool(inp.byte() & 1))
        else:
            continue
        steps += 1
        _check_core(core, decoder, limit, wire.fed, drained)
    # The peer sends the rest and closes; the driver reads and receives to the end.
    while wire.pending and not wire.eof and core.state is State.OPEN:
        before = len(wire.pending)
        read(len(wire.pending), True)
        if len(wire.pending) == before:
            break  # the decoder takes no more (broken): the rest is never read
        _check_core(core, decoder, limit, wire.fed, drained)
        if not core.wants_data():
            _call(lambda: core.next_frame())
    wire.eof = True
    core.buffer_updated(0)
    core.receive_eof()
    if handshake is not None:
        handshake.close()
    _drain_after_eof(
        lambda: core.next_frame(),
        lambda: core.closed,  # not open, and no message left to deliver
        wire.fed + READ_AHEAD,
        "ConnectionCore",
    )
    if not core.closed:
        raise Finding("ConnectionCore: the end was delivered but closed is False")


def _step(handshake: Generator[bytes | None, Any, None], message: Any) -> bool:
    """Advance the handshake to its next receive; True if it waits for one."""
    try:
        out = next(handshake) if message is None else handshake.send(message)
        while out is not None:  # a message to send: the peer gets it, go on
            out = handshake.send(None)
    except (StopIteration, NpipesError):
        return False
    return True


def _check_core(
    core: ConnectionCore, decoder: Any, limit: int, fed: int, drained: list[bool] | None = None
) -> None:
    """``drained[0]``: a receive failed since the queue was last within its budget. A
    failed receive keeps every whole frame already read, past the budget: then what is
    queued is bounded by the bytes that arrived, until the caller takes it."""
    _check_memory(decoder, max(limit, decoder.max_message_size or 0), fed)
    cap = READ_AHEAD + limit + _SLACK + 3 * ITEM_COST
    if drained is not None and core._ready_bytes <= cap:
        drained[0] = False
    if drained is not None and drained[0]:
        payload = core._ready_bytes - ITEM_COST * len(core._ready)
        if payload > fed:
            raise Finding(f"ConnectionCore queued {payload} payload bytes of {fed} received")
    elif core._ready_bytes > cap:
        raise Finding(f"ConnectionCore read ahead {core._ready_bytes} bytes; the cap is {cap}")
    if core._handshaking:  # (recv_failed may decode more than one ahead: bytes already in)
        for item in core._ready:
            if not isinstance(item, NpipesError) and item.size > MAX_HANDSHAKE_MESSAGE:
                raise Finding(f"a {item.size}-byte message was decoded during the handshake")


def _v1_harness(data: bytes) -> None:
    require_crc = bool(data[:1]) and data[0] & 0x80 != 0
    _run_decoder(
        lambda limit: FrameDecoder(max_message_size=limit, require_crc=require_crc),
        data[1:],
        NpipesCodec().encode,
        "utf-8",
    )


# -- the C accelerator against the pure fast paths ----------------------------------------


def _load_speedups() -> Any:
    """The C module (configured), or None where it is not built: the differential harness
    then runs the pure functions alone (their own invariants only)."""
    try:
        from npipes import _speedups  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return None
    _speedups.configure(crc32)
    return _speedups


_SPEEDUPS = _load_speedups()
_MAX_SIZES = (None, 0, 16, 64, SMALL_FRAME, SMALL_FRAME + 1, 2**63 - 1, 2**63, 2**64, 2**80)


def _outcome(func: Callable[..., Any], *args: Any) -> Any:
    """A call's result with the type of every part, or its exception's type and text."""
    try:
        result = func(*args)
    except (ValueError, TypeError, UnicodeError) as exc:
        return ("raised", type(exc), str(exc))
    if isinstance(result, tuple | list):
        return type(result), [(type(v), v) for v in result]
    return type(result), result


def _same(name: str, *args: Any) -> None:
    pure = _outcome(getattr(_frame, "pure_" + name), *args)
    if _SPEEDUPS is not None:
        fast = _outcome(getattr(_SPEEDUPS, name), *args)
        if fast != pure:
            raise Finding(f"C {name}{args!r:.300} gave {fast!r:.300}, pure {pure!r:.300}")


def _speedups_harness(data: bytes) -> None:
    """C == pure (npipes._speedups vs npipes._frame.pure_*) for parse_frame, parse_frames
    and encode_small(_many) on one buffer the input builds: raw bytes and frames with
    any header fields (right or wrong CRC, TEXT flag on any bytes), then several ranges,
    limits and max_size values; and encoding of payloads the input gives (bytes and str)."""
    inp = _Input(data)
    setup = inp.byte()
    require_crc = bool(setup & 1)
    max_size = _MAX_SIZES[(setup >> 1) % len(_MAX_SIZES)]
    buf = bytearray()
    payloads: list[object] = []
    for _ in range(64):
        if not inp.more():
            break
        op = inp.byte() % 6
        if op == 5:  # the buffer is complete: the rest of the input picks ranges
            break
        if op == 0:  # raw bytes
            buf += inp.take(inp.byte())
        elif op in (1, 2):  # a frame: flags from the input, right (1) or input-given (2) CRC
            flags = inp.byte()
            payload = inp.take(inp.byte())
            header = _HEADER.pack(b"NP", 1, flags & 0x03 if op == 1 else flags, 0, len(payload))
            trailer = _TRAILER.pack(crc32(payload)) if flags & 1 else b""
            if op == 2 and flags & 1:
                trailer = inp.take(4)
            buf += header + payload + trailer
            payloads.append(payload)
        elif op == 3:  # a header with any length field (huge ones included)
            buf += _HEADER.pack(b"NP", 1, inp.byte() & 3, 0, int.from_bytes(inp.take(8), "little"))
        elif op == 4:  # a payload to encode, as bytes or as the str it may be
            payload = inp.take(inp.u16() % (SMALL_FRAME + 2))
            text = payload.decode("utf-8", "surrogateescape" if inp.byte() & 1 else "replace")
            payloads += [payload, text]
    n = len(buf)
    for _ in range(1 + inp.byte() % 4):
        start = inp.u16() % (n + 2)
        end = n if inp.byte() & 1 else inp.u16() % (n + 2)
        _same("parse_frame", buf, start, end, max_size, require_crc)
        _same("parse_frame", memoryview(buf), start, end, max_size, require_crc)
        for limit in (0, 1, inp.byte() % 8, 2**70):
            _same("parse_frames", buf, start, end, max_size, require_crc, limit)
    for crc in (False, True):
        _same("encode_small_many", payloads, crc, max_size)
        for payload in payloads[:8]:
            _same("encode_small", payload, crc, max_size)


HARNESSES: dict[str, Callable[[bytes], None]] = {
    "frame_v1": _v1_harness,
    "multiprocessing_stream": _decoder_harness(
        MultiprocessingCodec(message_mode=False), False, "utf-8"
    ),
    "multiprocessing_message": _decoder_harness(
        MultiprocessingCodec(message_mode=True), True, None
    ),
    "npipes1": _decoder_harness(Npipes1Codec(), False, "ascii"),
    "raw_stream": _decoder_harness(RawCodec(), False, None),
    "raw_message": _decoder_harness(RawCodec(), True, None),
    "lines": _decoder_harness(LinesCodec(), False, "utf-8"),
    "dotnet": _decoder_harness(DotnetCodec(), False, "utf-16-le"),
    "core": _core_harness,
    "speedups": _speedups_harness,
}
"""Harness name (also its corpus directory's name) -> function taking the fuzzer's bytes."""

KNOWN: dict[str, str] = {}
"""Corpus files (``HARNESS/FILE``) that still break an invariant, with what breaks, until
src/ is fixed: the corpus test expects them to fail (strict xfail), run.py leaves them out."""
