"""Framings other than npipes v1, each a small sans-I/O codec with the same interface.

A *codec* turns a message into buffers to write (``encode``) and makes
*decoders* that turn received bytes back into messages. Front ends take
``framing=`` (a name or a codec object) and never branch on it. The decoder
interface is :class:`npipes._frame.FrameDecoder`'s: ``get_buffer`` /
``buffer_updated`` (or ``feed_data``), ``message_end`` (a pipe message or a
read ended), ``feed_eof``, ``next_frame``, ``next_frame_into``, ``broken``,
``idle``, ``bytes_needed``.

- ``npipes``: the v1 frame (docs/protocol.md); ``str`` or ``bytes``, optional CRC-32.
- ``multiprocessing``: CPython ``multiprocessing.connection`` ``send_bytes``: on
  POSIX a ``!i`` length (``-1`` then ``!Q`` from 2 GiB), on Windows one pipe
  message per message; ``bytes``.
- ``npipes1``: npipes 1.x, ``!I`` data length + 8, ``!I`` data length, data,
  ``!I`` CRC-32 or 0; ``str`` (ASCII by default).
- ``raw``: nothing; what each read returned (POSIX) or one pipe message (Windows).
- ``lines``: UTF-8 text, one message per ``\\n``-terminated line; ``str``.
- ``dotnet``: Microsoft's ``StreamString`` sample, ``!H`` byte length + UTF-16LE; ``str``.

Against a hostile peer (issue 10 §4) every decoder here:

- grows its buffer with the bytes that arrived, never to a length the peer
  announced: up to 1 MiB at once, then at most doubling what is buffered
  (``bytearray`` zero-fills, so an announced size would be resident memory at
  once). The cost: a message above 1 MiB is copied a few more times while it
  grows (amortised O(n)). The buffer returns to 64 KiB once drained;
- reads ``max_message_size`` for every message, so a changed limit (the
  handshake's 256 bytes) applies to the next header, which is rejected before
  its payload is read; a length no object can hold is refused even without a
  limit;
- ``raw`` (and ``multiprocessing`` on message pipes) fails as soon as an
  unfinished pipe message passes the limit, and ``lines`` as soon as an
  unfinished line does; ``lines`` looks at each byte once.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Protocol, final, runtime_checkable

from ._buffers import MAX_SIZE
from ._crc import crc32
from ._frame import Frame, FrameDecoder, encode_small, encode_small_many, frame_parts
from ._payload import as_buffer
from .errors import (
    BufferTooSmallError,
    ChecksumError,
    ConnectionClosedError,
    IncompleteMessageError,
    MessageTooLargeError,
    NpipesError,
    ProtocolError,
)

if TYPE_CHECKING:
    from ._types import Buffer, Payload

__all__ = [
    "FRAMINGS",
    "Codec",
    "Decoder",
    "DotnetCodec",
    "LinesCodec",
    "MultiprocessingCodec",
    "Npipes1Codec",
    "NpipesCodec",
    "RawCodec",
    "get_codec",
]


@runtime_checkable
class Decoder(Protocol):
    """What a transport drives (FrameDecoder is the reference implementation)."""

    require_crc: bool
    max_message_size: int | None  # read for every message: a change applies to the next one

    @property
    def broken(self) -> bool: ...
    @property
    def idle(self) -> bool: ...
    def get_buffer(self) -> memoryview: ...
    def buffer_updated(self, nbytes: int) -> None: ...
    def message_end(self) -> None: ...
    def feed_data(self, data: Buffer) -> None: ...
    def feed_eof(self) -> None: ...
    def next_frame(self) -> Frame | None: ...
    def next_frame_into(self, buffer: Buffer) -> tuple[int, bool, bool] | None: ...
    def release_buffer(self) -> bool: ...


@runtime_checkable
class Codec(Protocol):
    """A framing. Implement this to speak your own format through ``framing=``."""

    name: str
    supports_crc: bool
    supports_auth: bool
    message_based: bool  # True: on Windows pipes a message is one pipe message

    def encode(self, data: Payload, *, crc: bool, max_size: int | None) -> Sequence[Buffer]:
        """The buffers to write for one message, in order (payload not copied if possible)."""
        ...

    def decoder(
        self, *, max_message_size: int | None, require_crc: bool, message_mode: bool
    ) -> Decoder:
        """A fresh decoder; ``message_mode``: the transport keeps message boundaries."""
        ...


_SMALL: Final = 16 * 1024  # frames below this are sent as one joined buffer
_BUFFER_SIZE: Final = 64 * 1024  # the simple decoders' read buffer, between big messages
_EAGER: Final = 1 << 20  # room given at once for a message; beyond it, room follows the data


def _too_large(size: int, limit: int, framing: str) -> MessageTooLargeError:
    return MessageTooLargeError(
        f"a {size}-byte message is above the limit of {limit} bytes ({framing} framing)",
        size=size,
        limit=limit,
    )


def _check_size(size: int, max_size: int | None, framing: str) -> None:
    if max_size is not None and size > max_size:
        raise _too_large(size, max_size, framing)


# -- npipes v1 ----------------------------------------------------------------------


@final
class NpipesCodec:
    """The npipes v1 frame (docs/protocol.md)."""

    name = "npipes"
    supports_crc = True
    supports_auth = True
    message_based = False

    encode_small = staticmethod(encode_small)
    """``(data, crc, max_size) -> bytes | None``: a small message's frame (the hot path)."""

    def encode(self, data: Payload, *, crc: bool, max_size: int | None) -> Sequence[Buffer]:
        frame = encode_small(data, crc, max_size)
        if frame is not None:
            return (frame,)  # one buffer, one system call
        header, payload, trailer = frame_parts(data, crc=crc, max_size=max_size)
        if isinstance(payload, bytes) and len(payload) <= _SMALL:
            return (header + payload + trailer,)  # one buffer, one system call
        return header, payload, trailer

    def encode_batch(
        self, messages: list[Payload], *, crc: bool, max_size: int | None
    ) -> bytes | None:
        """Every message's frame joined into one ``bytes``, in one pass; None unless
        every one is a small ``bytes``/``str`` (then :meth:`encode` each)."""
        return encode_small_many(messages, crc, max_size)  # type: ignore[arg-type]

    def decoder(
        self, *, max_message_size: int | None, require_crc: bool, message_mode: bool
    ) -> Decoder:
        return FrameDecoder(max_message_size=max_message_size, require_crc=require_crc)


# -- a base for the simple decoders ------------------------------------------------------


class _SimpleDecoder:
    """Accumulates bytes in one growable buffer and parses messages out of it.

    Subclasses implement ``_parse(view)``: return None (need more), or
    ``(consumed, frame_or_error)``; raise an NpipesError for a fatal error.
    """

    framing = "?"

    def __init__(self, *, max_message_size: int | None, require_crc: bool = False) -> None:
        self.max_message_size = max_message_size
        self.require_crc = require_crc
        self._buf = bytearray(_BUFFER_SIZE)
        self._start = 0
        self._end = 0
        self._eof = False
        self._broken: Exception | None = None
        self._need = 0  # bytes the current message needs from _start, when known

    @property
    def broken(self) -> bool:
        return self._broken is not None

    @property
    def idle(self) -> bool:
        return self._start == self._end and not self.broken

    @property
    def bytes_needed(self) -> int:
        return max(1, self._need - (self._end - self._start))

    def _check(self) -> None:
        if self._broken is not None:
            raise ProtocolError(f"the stream is unusable after an earlier error: {self._broken}")

    def _fail(self, exc: NpipesError) -> NpipesError:
        self._broken = exc
        return exc

    def _room(self, extra: int) -> None:
        """Make sure ``extra`` more bytes fit after ``_end`` (compact, grow or shrink)."""
        kept = self._end - self._start
        size = len(self._buf)
        if size > _BUFFER_SIZE and kept + extra <= _BUFFER_SIZE // 2:
            size = _BUFFER_SIZE  # a big message is gone: give the memory back
        elif size - self._end >= extra:
            return
        elif kept + extra > size:
            size = max(2 * size, kept + extra)  # geometric: a long message costs O(n) copies
            if self._need:  # but never past what the message needs (when its length is known)
                size = min(size, max(self._need, kept + extra))
        if size == len(self._buf):
            self._buf[:kept] = self._buf[self._start : self._end]
        else:
            new = bytearray(size)
            new[:kept] = self._buf[self._start : self._end]
            self._buf = new
        self._start, self._end = 0, kept

    def _want(self) -> int:
        """How much room the next read gets: what the message still needs, but
        at most ``_EAGER`` or the bytes already buffered (memory follows data)."""
        kept = self._end - self._start
        return max(4096, min(self._need - kept, max(_EAGER, kept)))

    def get_buffer(self) -> memoryview:
        self._check()
        if self._start == self._end:
            self._start = self._end = 0
        want = self._want()
        try:
            self._room(want)
        except MemoryError as exc:  # typed and fatal, as FrameDecoder's payload storage
            size = self._end - self._start + want
            raise self._fail(
                MessageTooLargeError(
                    f"cannot allocate room for a {self.framing} message of more than"
                    f" {size - want} bytes; set max_message_size to refuse such messages",
                    size=size,
                    limit=self.max_message_size or MAX_SIZE,
                )
            ) from exc
        return memoryview(self._buf)[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        if nbytes < 0 or self._end + nbytes > len(self._buf):
            raise ValueError("nbytes does not fit the buffer that was handed out")
        self._end += nbytes

    def feed_data(self, data: Buffer) -> None:
        self._check()
        view = memoryview(data).cast("B")
        self._room(len(view))
        self._buf[self._end : self._end + len(view)] = view
        self._end += len(view)

    def release_buffer(self) -> bool:
        """Nothing to release: these decoders copy into a caller's buffer only when a
        message is whole (see ``next_frame_into``), and never keep it."""
        return False

    def message_end(self) -> None:
        """A read (POSIX) or a pipe message (Windows) ended; most framings ignore it."""

    def feed_eof(self) -> None:
        self._eof = True

    def _parse(self, view: memoryview) -> tuple[int, Frame | NpipesError] | None:
        raise NotImplementedError

    def _at_eof(self, leftover: memoryview) -> Frame | None:
        """What a stream that ends with ``leftover`` unparsed bytes yields (default: error)."""
        raise IncompleteMessageError(
            f"the peer closed the connection in the middle of a message"
            f" ({len(leftover)} bytes of it were received)"
        )

    def next_frame(self) -> Frame | None:
        self._check()
        view = memoryview(self._buf)[self._start : self._end]
        try:
            parsed = self._parse(view)
            if parsed is None:
                if not self._eof:
                    return None
                if self._start == self._end:
                    raise ConnectionClosedError("the peer closed the connection")
                last = self._at_eof(view)
                self._start = self._end
                return last
        except ConnectionClosedError:
            raise
        except NpipesError as exc:
            self._broken = exc
            raise
        finally:
            view.release()
        consumed, result = parsed
        self._start += consumed
        self._need = 0
        if isinstance(result, NpipesError):
            raise result  # that message only
        return result

    def next_frame_into(self, buffer: Buffer) -> tuple[int, bool, bool] | None:
        frame = self.next_frame()
        if frame is None:
            return None
        data = frame.message.encode("utf-8") if isinstance(frame.message, str) else frame.message
        target = memoryview(buffer).cast("B")
        if len(data) > len(target):
            raise BufferTooSmallError(
                f"the message is {len(data)} bytes; the buffer holds {len(target)} (it was"
                f" consumed: with {self.framing} framing recv_into cannot leave it queued)",
                size=len(data),
            )
        target[: len(data)] = data
        return len(data), isinstance(frame.message, str), frame.crc

    def _limit(self, size: int) -> None:
        if size > MAX_SIZE:  # possible with limit None: no object can be that big
            raise _too_large(size, MAX_SIZE, self.framing)
        if self.max_message_size is not None and size > self.max_message_size:
            raise _too_large(size, self.max_message_size, self.framing)


# -- multiprocessing -------------------------------------------------------------------

_MP_INT: Final = struct.Struct("!i")
_MP_LONG: Final = struct.Struct("!Q")


class _MultiprocessingDecoder(_SimpleDecoder):
    framing = "multiprocessing"

    def _parse(self, view: memoryview) -> tuple[int, Frame | NpipesError] | None:
        if len(view) < 4:
            self._need = 4
            return None
        (size,) = _MP_INT.unpack_from(view)
        header = 4
        if size == -1:  # 2 GiB and more: an 8-byte length follows
            if len(view) < 12:
                self._need = 12
                return None
            (size,) = _MP_LONG.unpack_from(view, 4)
            header = 12
        elif size < 0:
            raise ProtocolError(f"negative multiprocessing message length {size}")
        self._limit(size)
        if len(view) < header + size:
            self._need = header + size
            return None
        return header + size, Frame(bytes(view[header : header + size]), size, False)


class _RawDecoder(_SimpleDecoder):
    """Messages end where the transport says (a read on POSIX, a pipe message on Windows).

    The unfinished message is checked against ``max_message_size`` as bytes
    arrive, so an oversized pipe message fails before it is all buffered
    (issue 10 §6), and a read never gets more room than the limit leaves.
    """

    framing = "raw"

    def __init__(self, *, max_message_size: int | None, require_crc: bool = False) -> None:
        super().__init__(max_message_size=max_message_size)
        self._ready: list[int] = []  # end offsets of complete messages

    def _unfinished(self) -> int:
        return self._end - (self._ready[-1] if self._ready else self._start)

    def get_buffer(self) -> memoryview:
        view = super().get_buffer()
        limit = self.max_message_size
        if limit is not None:
            # One byte past the limit is enough to know a message is too big.
            view = view[: max(1, limit - self._unfinished())]
        return view

    def buffer_updated(self, nbytes: int) -> None:
        super().buffer_updated(nbytes)
        self._check_unfinished()

    def feed_data(self, data: Buffer) -> None:
        super().feed_data(data)
        self._check_unfinished()

    def _check_unfinished(self) -> None:
        try:
            self._limit(self._unfinished())
        except NpipesError as exc:
            raise self._fail(exc) from None

    def message_end(self) -> None:
        self._check()
        last = self._ready[-1] if self._ready else self._start
        if self._end > last:
            self._ready.append(self._end)

    def _room(self, extra: int) -> None:
        before = self._start
        super()._room(extra)
        shift = before - self._start
        if shift:
            self._ready = [end - shift for end in self._ready]

    def _parse(self, view: memoryview) -> tuple[int, Frame | NpipesError] | None:
        if not self._ready:
            return None
        size = self._ready.pop(0) - self._start
        return size, Frame(bytes(view[:size]), size, False)

    def _at_eof(self, leftover: memoryview) -> Frame | None:
        return Frame(bytes(leftover), len(leftover), False)  # the last bytes are a message


@final
class RawCodec:
    """No framing at all: ``bytes`` as they arrive (POSIX) or one pipe message each (Windows)."""

    name = "raw"
    supports_crc = False
    supports_auth = False
    message_based = True

    def encode(self, data: Payload, *, crc: bool, max_size: int | None) -> Sequence[Buffer]:
        payload, size, _ = as_buffer(data)
        _check_size(size, max_size, self.name)
        return [payload]

    def decoder(
        self, *, max_message_size: int | None, require_crc: bool, message_mode: bool
    ) -> Decoder:
        return _RawDecoder(max_message_size=max_message_size)


@final
class MultiprocessingCodec:
    """Byte-compatible with ``multiprocessing.connection``'s ``send_bytes``/``recv_bytes``."""

    name = "multiprocessing"
    supports_crc = False
    supports_auth = True
    message_based = True

    def __init__(self, *, message_mode: bool | None = None) -> None:
        self._message_mode = message_mode  # None: follow the transport

    def encode(self, data: Payload, *, crc: bool, max_size: int | None) -> Sequence[Buffer]:
        payload, size, _ = as_buffer(data)
        _check_size(size, max_size, self.name)
        if self._message_mode:
            return [payload]
        if size > 0x7FFFFFFF:
            return [_MP_INT.pack(-1) + _MP_LONG.pack(size), payload]
        return [_MP_INT.pack(size), payload]

    def decoder(
        self, *, max_message_size: int | None, require_crc: bool, message_mode: bool
    ) -> Decoder:
        if self._message_mode is None:
            self._message_mode = message_mode
        if self._message_mode:  # Windows AF_PIPE: one pipe message per message
            return _RawDecoder(max_message_size=max_message_size)
        return _MultiprocessingDecoder(max_message_size=max_message_size)


# -- npipes 1.x ---------------------------------------------------------------------------

_V1X_HEADER: Final = struct.Struct(">II")
_V1X_CRC: Final = struct.Struct(">I")


class _Npipes1Decoder(_SimpleDecoder):
    framing = "npipes1"

    def __init__(self, *, max_message_size: int | None, require_crc: bool, encoding: str) -> None:
        super().__init__(max_message_size=max_message_size, require_crc=require_crc)
        self.encoding = encoding

    def _parse(self, view: memoryview) -> tuple[int, Frame | NpipesError] | None:
        if len(view) < 8:
            self._need = 8
            return None
        total, size = _V1X_HEADER.unpack_from(view)
        if total != size + 8:
            raise ProtocolError(
                f"not an npipes 1.x message (total {total} != data length {size} + 8)"
            )
        self._limit(size)
        end = 8 + size + 4
        if len(view) < end:
            self._need = end
            return None
        payload = view[8 : 8 + size]
        (checksum,) = _V1X_CRC.unpack_from(view, 8 + size)
        if checksum and crc32(payload) != checksum:
            return end, ChecksumError(f"CRC-32 mismatch in a {size}-byte npipes 1.x message")
        # 0 means "no CRC-32" in 1.x, but it is also the CRC-32 of every empty payload:
        # there it is a valid checksum (a crc=True receiver refused empty messages).
        # A non-empty payload whose CRC-32 is 0 (odds 2**-32) still reads as unchecked.
        has_crc = bool(checksum) or size == 0
        if not has_crc and self.require_crc:
            return end, ChecksumError("the npipes 1.x message has no CRC-32 but crc=True")
        try:
            text = str(payload, self.encoding)
        except UnicodeDecodeError as exc:
            return end, ProtocolError(f"an npipes 1.x message is not {self.encoding}: {exc}")
        return end, Frame(text, size, has_crc)


@final
class Npipes1Codec:
    """The frame of npipes 1.x, to talk to programs still on it."""

    name = "npipes1"
    supports_crc = True
    supports_auth = False
    message_based = False

    def __init__(self, *, encoding: str = "ascii") -> None:
        self.encoding = encoding

    def encode(self, data: Payload, *, crc: bool, max_size: int | None) -> Sequence[Buffer]:
        payload, size, _ = as_buffer(data, self.encoding)
        _check_size(size, max_size, self.name)
        if size > 0xFFFFFFFF - 8:
            raise _too_large(size, 0xFFFFFFFF - 8, self.name)
        checksum = crc32(payload) if crc else 0
        return [_V1X_HEADER.pack(size + 8, size), payload, _V1X_CRC.pack(checksum)]

    def decoder(
        self, *, max_message_size: int | None, require_crc: bool, message_mode: bool
    ) -> Decoder:
        return _Npipes1Decoder(
            max_message_size=max_message_size, require_crc=require_crc, encoding=self.encoding
        )


# -- lines ------------------------------------------------------------------------------


class _LinesDecoder(_SimpleDecoder):
    framing = "lines"

    def __init__(self, *, max_message_size: int | None, require_crc: bool = False) -> None:
        super().__init__(max_message_size=max_message_size)
        self._scanned = 0  # bytes after _start known to hold no newline: each is looked at once

    def _parse(self, view: memoryview) -> tuple[int, Frame | NpipesError] | None:
        end = self._buf.find(b"\n", self._start + self._scanned, self._end)
        if end < 0:
            self._scanned = len(view)
            self._limit(len(view))  # a line longer than the limit can never end well
            return None
        self._scanned = 0
        size = end - self._start
        self._limit(size)
        return size + 1, self._line(view[:size])

    def _line(self, raw: memoryview) -> Frame | NpipesError:
        data = bytes(raw)
        if data.endswith(b"\r"):
            data = data[:-1]
        try:
            return Frame(data.decode("utf-8"), len(data), False)
        except UnicodeDecodeError as exc:
            return ProtocolError(f"a line is not valid UTF-8 ({exc.reason}); it was dropped")

    def _at_eof(self, leftover: memoryview) -> Frame | None:
        result = self._line(leftover)  # `printf 'hi' > pipe`: the last line has no newline
        if isinstance(result, NpipesError):
            raise result
        return result


@final
class LinesCodec:
    """Newline-delimited UTF-8 text, for shells, ``jq`` and PowerShell."""

    name = "lines"
    supports_crc = False
    supports_auth = False
    message_based = False

    def encode(self, data: Payload, *, crc: bool, max_size: int | None) -> Sequence[Buffer]:
        payload = bytes(as_buffer(data)[0])
        if b"\n" in payload:
            raise ValueError("a message sent with lines framing cannot contain a newline")
        _check_size(len(payload), max_size, self.name)
        return [payload + b"\n"]

    def decoder(
        self, *, max_message_size: int | None, require_crc: bool, message_mode: bool
    ) -> Decoder:
        return _LinesDecoder(max_message_size=max_message_size)


# -- .NET StreamString -------------------------------------------------------------------

_DOTNET_LEN: Final = struct.Struct(">H")


class _DotnetDecoder(_SimpleDecoder):
    framing = "dotnet"

    def _parse(self, view: memoryview) -> tuple[int, Frame | NpipesError] | None:
        if len(view) < 2:
            self._need = 2
            return None
        (size,) = _DOTNET_LEN.unpack_from(view)
        self._limit(size)
        if len(view) < 2 + size:
            self._need = 2 + size
            return None
        try:
            text = str(view[2 : 2 + size], "utf-16-le")
        except UnicodeDecodeError as exc:
            return 2 + size, ProtocolError(f"a dotnet message is not UTF-16LE: {exc.reason}")
        return 2 + size, Frame(text, size, False)


@final
class DotnetCodec:
    """Microsoft's ``StreamString`` sample: 2-byte big-endian byte length + UTF-16LE."""

    name = "dotnet"
    supports_crc = False
    supports_auth = False
    message_based = False

    def encode(self, data: Payload, *, crc: bool, max_size: int | None) -> Sequence[Buffer]:
        payload, size, _ = as_buffer(data, "utf-16-le")
        limit = 0xFFFF if max_size is None else min(max_size, 0xFFFF)
        if size > limit:  # the C# sample silently truncates; we refuse instead
            raise _too_large(size, limit, self.name)
        return [_DOTNET_LEN.pack(size), payload]

    def decoder(
        self, *, max_message_size: int | None, require_crc: bool, message_mode: bool
    ) -> Decoder:
        return _DotnetDecoder(max_message_size=max_message_size)


FRAMINGS: Final[dict[str, type]] = {
    "npipes": NpipesCodec,
    "multiprocessing": MultiprocessingCodec,
    "npipes1": Npipes1Codec,
    "raw": RawCodec,
    "lines": LinesCodec,
    "dotnet": DotnetCodec,
}


def get_codec(framing: str | Codec, *, crc: bool = False, authkey: bytes | None = None) -> Codec:
    """The codec for ``framing`` (a name above or your own :class:`Codec`), checked against options.

    Raises:
        ValueError: unknown name, or an option the framing cannot do (``crc``, ``authkey``).
    """
    if isinstance(framing, str):
        try:
            codec: Codec = FRAMINGS[framing]()
        except KeyError:
            raise ValueError(
                f"unknown framing {framing!r}; choose one of {sorted(FRAMINGS)}"
                " or pass a codec object (see docs/framings.md)"
            ) from None
    elif isinstance(framing, Codec):
        codec = framing
    else:
        raise TypeError(f"framing must be a name or a codec object, not {type(framing).__name__}")
    if authkey is not None and not isinstance(authkey, bytes):
        raise TypeError(f"authkey must be bytes, not {type(authkey).__name__}")
    if crc and not codec.supports_crc:
        raise ValueError(f"the {codec.name} framing has no checksum: crc=True is not available")
    if authkey is not None and not codec.supports_auth:
        raise ValueError(
            f"authkey works with the npipes and multiprocessing framings, not {codec.name}"
        )
    return codec
