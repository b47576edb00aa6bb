"""Sans-I/O codec for the npipes v1 frame (docs/protocol.md).

No sockets, handles, threads or clocks here: transports move bytes, this
module decides what they mean.

Encoding returns the header and trailer as separate small ``bytes`` and leaves
the payload where it is, so a transport can write all three with one
``sendmsg``/``WriteFile`` sequence without copying the payload.

Decoding works like asyncio's ``BufferedProtocol``: the transport asks
``get_buffer()`` where to put the next bytes, reads into it (``recv_into``)
and reports ``buffer_updated(n)``. Small frames are parsed out of one 64 KiB
read buffer, many per read. For a frame too big for that buffer the decoder
allocates the payload object once, at its exact size, and ``get_buffer()``
then points straight into it: an N-byte message costs N bytes and no joins.
``feed_data()`` is the simple copying entry point for tests and callers
without a buffer-aware transport.

Memory follows the bytes that arrived, never a length a peer announced
(issue 10 §4). A payload up to ``_EAGER`` (16 MiB) gets its exact-size object
at once: it is not zero-filled, so its pages stay untouched (no resident
memory) until bytes land in them. A larger payload is read into storage that
grows four-fold as data arrives (16, 64, 256 MiB...) until the exact-size
object is due; each step copies what arrived so far, so a message above
16 MiB is copied once more in part (between 1/4 and 4/3 of its size), and a
header alone costs at most 16 MiB of untouched address space. Lengths above
what this interpreter can allocate (``_buffers.MAX_SIZE``, about 2**63) are
refused like any message above ``max_message_size``. The read buffer that
``feed_data()`` may grow returns to its normal size once it is drained.

A caller's buffer (``next_frame_into``) is borrowed for one call only: the
connection calls :meth:`FrameDecoder.release_buffer` after each call, which
forgets it and tells whether a frame was left half-received in it.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Final, NamedTuple, final

from . import _accel
from ._buffers import MAX_SIZE, allocate
from ._crc import crc32
from ._payload import as_buffer
from .errors import (
    BufferTooSmallError,
    ChecksumError,
    ConnectionClosedError,
    IncompleteMessageError,
    MessageTooLargeError,
    ProtocolError,
)

if TYPE_CHECKING:
    from ._types import Buffer, Payload

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "FLAG_CRC",
    "FLAG_TEXT",
    "HEADER_SIZE",
    "MAGIC",
    "TRAILER_SIZE",
    "VERSION",
    "Frame",
    "FrameDecoder",
    "crc32",
    "encode_frame",
    "frame_parts",
]

MAGIC: Final = b"NP"
VERSION: Final = 1
FLAG_CRC: Final = 0x01
FLAG_TEXT: Final = 0x02
_KNOWN_FLAGS: Final = FLAG_CRC | FLAG_TEXT
HEADER_SIZE: Final = 16
TRAILER_SIZE: Final = 4
DEFAULT_MAX_MESSAGE_SIZE: Final = 1 << 30  # 1 GiB
READ_BUFFER_SIZE: Final = 64 * 1024
_LARGE: Final = 32 * 1024  # payloads from this size are read in place into their own buffer
_EAGER: Final = 16 << 20  # payloads up to this size get their exact-size object at once
SMALL_FRAME: Final = 16 * 1024
"""Payloads up to this size are framed as one joined ``bytes`` (one write, no iovec)."""

_HEADER: Final = struct.Struct("<2sBBIQ")
_TRAILER: Final = struct.Struct("<I")


def frame_parts(
    data: Payload, *, crc: bool = False, max_size: int | None = None
) -> tuple[bytes, Buffer, bytes]:
    """Encode one message as ``(header, payload, trailer)`` without copying the payload.

    Args:
        data: ``str`` is sent as UTF-8 with the TEXT flag; any bytes-like object
            (C-contiguous) as binary.
        crc: append a CRC-32 trailer; ``trailer`` is ``b""`` otherwise.
        max_size: refuse payloads above this many bytes.
    Raises:
        MessageTooLargeError: the payload is above ``max_size``; nothing was encoded.
        TypeError: ``data`` is not ``str`` or a C-contiguous bytes-like object.
    """
    flags = 0
    payload: Buffer
    if type(data) is bytes:  # the common cases first, without a call
        payload = data
        size = len(data)
    elif type(data) is str:
        payload = data.encode("utf-8")
        size = len(payload)
        flags = FLAG_TEXT
    else:
        payload, size, text = as_buffer(data)
        if text:
            flags = FLAG_TEXT
    if max_size is not None and size > max_size:
        raise MessageTooLargeError(
            f"cannot send a {size}-byte message: max_message_size is {max_size}."
            " Raise max_message_size on both sides, or split the message.",
            size=size,
            limit=max_size,
        )
    trailer = b""
    if crc:
        flags |= FLAG_CRC
        trailer = _TRAILER.pack(crc32(payload))
    header = _HEADER.pack(MAGIC, VERSION, flags, 0, size)
    return header, payload, trailer


# -- fast paths: pure Python here, mirrored by the C accelerator (npipes._accel) ------------
# Each returns None where it does not apply (an unusual payload, an incomplete or bad
# frame): the general code then runs, so every error is raised by one implementation.
# The C versions must return exactly what these return, on every input (tests/test_speedups*).


def encode_small(data: object, crc: bool, max_size: int | None) -> bytes | None:
    """One frame as one ``bytes`` (header, payload, trailer) for an exact ``bytes`` or
    ``str`` payload of at most :data:`SMALL_FRAME` bytes and ``max_size``; else None."""
    flags = 0
    if type(data) is bytes:
        payload = data
    elif type(data) is str:
        if len(data) > SMALL_FRAME:  # UTF-8 is at least one byte per character
            return None
        try:
            payload = data.encode("utf-8")
        except UnicodeEncodeError:
            return None  # a lone surrogate: the general path raises the error
        flags = FLAG_TEXT
    else:
        return None
    size = len(payload)
    if size > SMALL_FRAME or (max_size is not None and size > max_size):
        return None
    if crc:
        header = _HEADER.pack(MAGIC, VERSION, flags | FLAG_CRC, 0, size)
        return header + payload + _TRAILER.pack(crc32(payload))
    return _HEADER.pack(MAGIC, VERSION, flags, 0, size) + payload


def encode_small_many(messages: list[object], crc: bool, max_size: int | None) -> bytes | None:
    """:func:`encode_small` of every message, joined; None if any one gives None."""
    frames = []
    for data in messages:
        frame = encode_small(data, crc, max_size)
        if frame is None:
            return None
        frames.append(frame)
    return b"".join(frames)


def _bytes_view(buf: Buffer, start: int, end: int) -> memoryview:
    """``buf`` as a memoryview of bytes, after checking that ``start:end`` is in it."""
    view = buf if type(buf) is memoryview and buf.format == "B" else memoryview(buf).cast("B")
    if not 0 <= start <= end <= len(view):
        raise ValueError(f"bad range {start}:{end} of a {len(view)}-byte buffer")
    return view


def _parse_run(
    view: memoryview,
    start: int,
    end: int,
    max_size: int | None,
    require_crc: bool,
    limit: int,
    messages: list[bytes | str] | None,
) -> tuple[bytes | str | None, int, int, bool]:
    """The one rule of both parse functions: take up to ``limit`` whole, valid frames
    from ``start`` (their messages appended to ``messages`` if given); return the last
    one's ``(message, new_start, size, crc)``, message None if none was taken."""
    size, has_crc = 0, False
    message: bytes | str | None = None
    unpack = _HEADER.unpack_from
    taken = 0
    while taken < limit and end - start >= HEADER_SIZE:
        magic, version, flags, reserved, length = unpack(view, start)
        if magic != MAGIC or version != VERSION or flags & ~_KNOWN_FLAGS or reserved:
            break
        if max_size is not None and length > max_size:
            break
        body = start + HEADER_SIZE
        stop = body + length
        crc = bool(flags & FLAG_CRC)
        new_start = stop + TRAILER_SIZE if crc else stop
        if new_start > end or (require_crc and not crc):
            break
        payload = bytes(view[body:stop])
        if crc and crc32(payload) != _TRAILER.unpack_from(view, stop)[0]:
            break
        if flags & FLAG_TEXT:
            try:
                message = str(payload, "utf-8")
            except UnicodeDecodeError:
                break
        else:
            message = payload
        if messages is not None:
            messages.append(message)
        start, size, has_crc = new_start, length, crc
        taken += 1
    return message, start, size, has_crc


def parse_frame(
    buf: Buffer, start: int, end: int, max_size: int | None, require_crc: bool
) -> tuple[bytes | str, int, bool, int] | None:
    """The whole, valid frame at ``buf[start:end]`` as ``(message, size, crc, new_start)``.

    None unless the header is valid, the length within ``max_size``, the whole
    frame present, its CRC-32 (if flagged) right, its text (if TEXT) strict
    UTF-8, and not ``require_crc`` without a CRC.
    """
    view = _bytes_view(buf, start, end)
    message, new_start, size, has_crc = _parse_run(view, start, end, max_size, require_crc, 1, None)
    return None if message is None else (message, size, has_crc, new_start)


def parse_frames(
    buf: Buffer, start: int, end: int, max_size: int | None, require_crc: bool, limit: int
) -> tuple[list[bytes | str], int]:
    """:func:`parse_frame` from ``start`` on, at most ``limit`` times: ``(messages, new_start)``."""
    view = _bytes_view(buf, start, end)
    messages: list[bytes | str] = []
    new_start = _parse_run(view, start, end, max_size, require_crc, limit, messages)[1]
    return messages, new_start


pure_encode_small, pure_encode_small_many = encode_small, encode_small_many
pure_parse_frame, pure_parse_frames = parse_frame, parse_frames
if _accel.speedups is not None:
    encode_small = _accel.speedups.encode_small
    encode_small_many = _accel.speedups.encode_small_many
    parse_frame = _accel.speedups.parse_frame
    parse_frames = _accel.speedups.parse_frames


def encode_frame(data: Payload, *, crc: bool = False) -> bytes:
    """Encode one message as a complete frame (a copy; see :func:`frame_parts`)."""
    return b"".join(frame_parts(data, crc=crc))


class Frame(NamedTuple):
    """One decoded message (a named tuple: cheap to make on the hot path).

    Attributes:
        message: ``str`` for a TEXT frame, else ``bytes``.
        size: payload size in bytes.
        crc: whether the frame carried a (verified) CRC-32.
    """

    message: bytes | str
    size: int
    crc: bool


# Decoder states.
_HEADER_STATE: Final = 0  # waiting for a 16-byte header
_BODY: Final = 1  # small frame: payload + trailer come through the read buffer
_PAYLOAD: Final = 2  # large frame: payload goes straight into its own object
_TRAILER_STATE: Final = 3  # large frame: waiting for the 4-byte CRC
_BROKEN: Final = 4  # framing lost; every call raises


@final
class FrameDecoder:
    """Incremental decoder of a stream of v1 frames.

    Args:
        max_message_size: largest payload accepted, in bytes; None for no limit.
        require_crc: raise :class:`ChecksumError` for frames without a CRC.
        buffer_size: size of the read buffer small frames are parsed from.
    """

    def __init__(
        self,
        *,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        require_crc: bool = False,
        buffer_size: int = READ_BUFFER_SIZE,
    ) -> None:
        if buffer_size < HEADER_SIZE + TRAILER_SIZE:
            raise ValueError(f"buffer_size must be at least {HEADER_SIZE + TRAILER_SIZE}")
        self.max_message_size = max_message_size
        self.require_crc = require_crc
        self._buffer_size = buffer_size
        self._buf = bytearray(buffer_size)
        self._view = memoryview(self._buf)  # kept: slicing it is cheaper than a new view
        self._start = 0  # first unparsed byte in _buf
        self._end = 0  # one past the last received byte in _buf
        self._state = _HEADER_STATE
        self._eof = False
        self._flags = 0
        self._length = 0
        self._target: bytes | bytearray | memoryview | None = None
        self._target_view: memoryview | None = None  # where the payload goes (may be short)
        self._borrowed = False  # _target is the caller's buffer (next_frame_into)
        self._filled = 0
        self._error: Exception | None = None
        # The last frame was large: read the next header (and trailer) alone, so the
        # next large payload lands in its own object, not in the read buffer (no copy).
        self._large_run = False

    # -- state ------------------------------------------------------------

    @property
    def broken(self) -> bool:
        """True after a fatal error: framing is lost and the stream must be closed."""
        return self._state == _BROKEN

    @property
    def idle(self) -> bool:
        """True between frames with nothing buffered (a clean place to stop)."""
        return self._state == _HEADER_STATE and self._start == self._end

    @property
    def bytes_needed(self) -> int:
        """The fewest bytes that must arrive before the next step can complete.

        A transport may read more (and should, for small frames); this is the
        amount below which ``next_frame`` is sure to return None.
        """
        avail = self._end - self._start
        state = self._state
        if state == _HEADER_STATE:
            return max(0, HEADER_SIZE - avail)
        if state == _BODY:
            return max(0, self._length + self._trailer_size() - avail)
        if state == _PAYLOAD:
            return self._length - self._filled + max(0, self._trailer_size() - avail)
        if state == _TRAILER_STATE:
            return max(0, self._trailer_size() - avail)
        return 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        extra = self._filled if self._state == _PAYLOAD else 0
        return self._end - self._start + extra

    def _fail(self, exc: Exception) -> Exception:
        self._state = _BROKEN
        self._error = exc
        self._target = self._target_view = None
        self._borrowed = False
        return exc

    def release_buffer(self) -> bool:
        """Forget the caller's buffer given to :meth:`next_frame_into`, if any.

        A caller's buffer is borrowed for one call only (issue 10 §1): call this
        after every ``next_frame_into`` call that did not return a frame
        (the connection does, in a ``finally``).

        Returns:
            True if part of a frame had already been written into that buffer:
            it cannot be recovered, the decoder is broken and the connection
            must be closed. False if nothing was lost (the next call may use
            another buffer, or :meth:`next_frame`).
        """
        if not self._borrowed:
            return False
        self._borrowed = False
        self._target = self._target_view = None
        if self._filled or self._state == _TRAILER_STATE:
            self._fail(
                ProtocolError(
                    f"a receive into a caller's buffer stopped after {self._filled} bytes of a"
                    f" {self._length}-byte message; the rest cannot be received"
                )
            )
            return True
        return False

    # -- input ------------------------------------------------------------

    def get_buffer(self) -> memoryview:
        """Return a writable view where the transport should put the next bytes."""
        if self._state == _BROKEN:
            raise self._broken_error()
        if self._state == _PAYLOAD:
            if self._filled < self._length:
                view = self._target_view
                if view is None or self._filled == len(view):
                    view = self._grow_target()
                return view[self._filled :]
            self._state = _TRAILER_STATE  # the payload is whole; the CRC comes next
        if self._start == self._end:
            self._start = self._end = 0
            if len(self._buf) > self._buffer_size:  # feed_data grew it for a big chunk
                self._set_buffer(bytearray(self._buffer_size))
            if self._large_run and self._state != _BODY:
                # The trailer (if any) and the next header only: one more small read
                # per large message instead of copying most of its payload.
                extra = self._trailer_size() if self._state == _TRAILER_STATE else 0
                return self._view[: HEADER_SIZE + extra]
        elif len(self._buf) - self._end < HEADER_SIZE + TRAILER_SIZE or self._needed_room():
            self._compact()
        view = self._view[self._end :]
        if not view and self._state == _HEADER_STATE and self._end - self._start >= HEADER_SIZE:
            # Full of bytes nobody decoded yet, beginning with a whole header: parse
            # it now, so a large payload gets its own room (found by fuzzing).
            saved = self._start, self._target, self._target_view, self._borrowed
            try:
                self._parse_header(None)
            except (ProtocolError, MessageTooLargeError):
                # Not here: next_frame parses it again and raises, in stream order
                # (back at the header: a failed payload allocation had moved past it).
                self._state, self._error = _HEADER_STATE, None
                self._start, self._target, self._target_view, self._borrowed = saved
            else:
                return self.get_buffer()
        if not view:
            # Full of whole frames nobody decoded yet (a driver whose read-ahead is
            # full still feeds what one read brought): grow, never hand out no room.
            kept = self._end - self._start
            new = bytearray(kept + self._buffer_size)
            new[:kept] = self._view[self._start : self._end]
            self._set_buffer(new)
            self._start, self._end = 0, kept
            view = self._view[self._end :]
        return view

    def _needed_room(self) -> bool:
        # A small frame's body must fit between _start and the buffer's end.
        if self._state != _BODY:
            return False
        return self._start + self._length + self._trailer_size() > len(self._buf)

    def _set_buffer(self, buf: bytearray) -> None:
        self._buf = buf
        self._view = memoryview(buf)

    def _compact(self) -> None:
        count = self._end - self._start
        self._view[:count] = self._view[self._start : self._end]  # one copy, no temporary
        self._start, self._end = 0, count

    def buffer_updated(self, nbytes: int) -> None:
        """Record that the transport wrote ``nbytes`` into the last ``get_buffer()``."""
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        if self._state == _PAYLOAD:
            self._filled += nbytes
            view = self._target_view
            if view is None or self._filled > len(view):
                raise ValueError("more bytes reported than the buffer had room for")
        else:
            self._end += nbytes
            if self._end > len(self._buf):
                raise ValueError("more bytes reported than the buffer had room for")

    def feed_data(self, data: Buffer) -> None:
        """Copy ``data`` into the decoder (any size; the buffer grows if needed)."""
        if self._state == _BROKEN:
            raise self._broken_error()
        view = memoryview(data).cast("B")
        if self._state == _PAYLOAD and not self._borrowed:
            while view and self._filled < self._length:
                target = self._target_view
                if target is None or self._filled == len(target):
                    target = self._grow_target()
                take = min(len(view), len(target) - self._filled)
                target[self._filled : self._filled + take] = view[:take]
                self._filled += take
                view = view[take:]
            if not view:
                return
            # The rest belongs to the trailer and following frames.
        if self._start == self._end:
            self._start = self._end = 0
            if len(self._buf) > self._buffer_size and len(view) <= self._buffer_size:
                self._set_buffer(bytearray(self._buffer_size))  # back to normal after a big chunk
        free = len(self._buf) - self._end
        if len(view) > free:
            kept = self._end - self._start
            size = max(self._buffer_size, kept + len(view))
            new = bytearray(size)
            new[:kept] = self._buf[self._start : self._end]
            self._set_buffer(new)
            self._start, self._end = 0, kept
        self._buf[self._end : self._end + len(view)] = view
        self._end += len(view)

    def message_end(self) -> None:
        """A read or pipe message ended: nothing to do, v1 frames are a byte stream."""

    def feed_eof(self) -> None:
        """Record that the stream ended; ``next_frame`` reports it once drained."""
        self._eof = True

    # -- output -----------------------------------------------------------

    def next_frame(self) -> Frame | None:
        """Return the next complete frame, or None if more bytes are needed.

        Raises:
            ProtocolError: bad header (fatal) or bad UTF-8 in a TEXT frame (not fatal).
            MessageTooLargeError: declared length above the limit (fatal).
            ChecksumError: CRC mismatch or missing CRC under ``require_crc`` (not fatal).
            ConnectionClosedError: the stream ended cleanly between frames.
            IncompleteMessageError: the stream ended inside a frame (fatal).
        """
        # The fast path: a whole, valid frame at the front of the read buffer.
        if self._state == _HEADER_STATE:
            start, end = self._start, self._end
            if end - start < HEADER_SIZE and not self._eof:
                return None
            got = parse_frame(self._view, start, end, self.max_message_size, self.require_crc)
            if got is not None:
                self._start = got[3]
                self._large_run = False
                return Frame(got[0], got[1], got[2])
        payload = self._advance(None)
        if payload is None:
            return None
        return self._finish(payload)

    def take_message(self, require_crc: bool) -> bytes | str | None:
        """The next message if a whole, valid frame is at the front of the read
        buffer, else None (then :meth:`next_frame` does the rest): the hot path."""
        if self._state != _HEADER_STATE:
            return self._take_large(require_crc)
        if self._end - self._start < HEADER_SIZE:
            return None  # nothing whole yet (an empty buffer between round trips)
        require = require_crc or self.require_crc
        got = parse_frame(self._view, self._start, self._end, self.max_message_size, require)
        if got is None:
            return None
        self._start = got[3]
        self._large_run = False
        return got[0]

    def _take_large(self, require_crc: bool) -> bytes | None:
        """A large binary payload without CRC that is whole in its own ``bytes``: the
        frame ends there, so it is the message (what :meth:`_advance` and
        :meth:`_finish` would return, without their general steps)."""
        if (
            self._filled != self._length
            or self._flags
            or require_crc
            or self.require_crc
            or self._borrowed
            or self._state not in (_PAYLOAD, _TRAILER_STATE)
        ):
            return None
        target = self._target
        if type(target) is not bytes:
            return None
        self._target = self._target_view = None
        self._state = _HEADER_STATE
        return target

    def take_message_into(self, view: memoryview, require_crc: bool) -> int | None:
        """Like :meth:`take_message`, writing the payload into ``view`` (a writable
        byte memoryview); None also if it does not fit (:meth:`next_frame_into` says so)."""
        if self._state != _HEADER_STATE:
            return None
        got = self._take_into(view, require_crc or self.require_crc)
        return None if got is None else got[0]

    def _take_into(self, view: memoryview, require: bool) -> tuple[int, bool, bool] | None:
        start = self._start
        got = parse_frame(self._view, start, self._end, self.max_message_size, require)
        if got is None or got[1] > len(view):
            return None
        message, size, crc, self._start = got
        self._large_run = False
        body = start + HEADER_SIZE
        view[:size] = self._view[body : body + size]
        return size, type(message) is str, crc

    def take_messages(self, limit: int, require_crc: bool) -> list[bytes | str]:
        """Up to ``limit`` whole, valid frames' messages from the read buffer, in one pass.

        Stops, without raising, at anything else (a partial, large or bad frame, a
        missing CRC with ``require_crc``): :meth:`next_frame` deals with it.
        """
        if self._state != _HEADER_STATE or limit < 1:
            return []
        require = require_crc or self.require_crc
        messages, self._start = parse_frames(
            self._view, self._start, self._end, self.max_message_size, require, limit
        )
        return messages

    def next_frame_into(self, buffer: Buffer) -> tuple[int, bool, bool] | None:
        """Like :meth:`next_frame`, but write the payload into ``buffer``.

        Returns:
            ``(size, text, crc)`` once a frame is complete, else None.
        The decoder may write into ``buffer`` during this call only; call
        :meth:`release_buffer` afterwards (it keeps a reference until then).

        Raises:
            BufferTooSmallError: the next frame is longer than ``buffer``; nothing
                is consumed.
        """
        view = memoryview(buffer)
        if view.readonly:
            raise TypeError("recv_into needs a writable buffer")
        if not view.c_contiguous:
            raise TypeError(
                "recv_into needs a C-contiguous buffer; pass bytearray(n) or"
                " numpy.ascontiguousarray(x)"
            )
        view = view.cast("B")
        if self._state == _HEADER_STATE:  # the fast path: a whole, valid frame that fits
            got = self._take_into(view, self.require_crc)
            if got is not None:
                return got
        payload = self._advance(view)
        if payload is None:
            return None
        crc = bool(self._flags & FLAG_CRC)
        frame = self._finish(payload, into=view)
        data = payload[0]
        if not isinstance(data, memoryview):  # read into the decoder's own object
            view[: frame.size] = data
        return frame.size, bool(self._flags & FLAG_TEXT), crc

    def __iter__(self) -> FrameDecoder:
        return self

    def __next__(self) -> Frame:
        frame = self.next_frame()
        if frame is None:
            raise StopIteration
        return frame

    # -- internals --------------------------------------------------------

    def _trailer_size(self) -> int:
        return TRAILER_SIZE if self._flags & FLAG_CRC else 0

    def _broken_error(self) -> Exception:
        return ProtocolError(f"the stream is unusable after an earlier error: {self._error}")

    def _advance(self, into: memoryview | None) -> tuple[Buffer, bytes] | None:
        """Move through the states; return ``(payload, trailer)`` when a frame is whole."""
        state = self._state
        if state == _BROKEN:
            raise self._broken_error()
        if into is not None and not self._borrowed and state != _HEADER_STATE:
            # A frame begun by another call: it must fit, and it goes into ``into``.
            if self._length > len(into):
                raise BufferTooSmallError(
                    f"the next message is {self._length} bytes; the buffer holds {len(into)}",
                    size=self._length,
                )
            if state == _PAYLOAD and self._target_view is None:
                self._borrow(into)
        if state == _HEADER_STATE:
            if self._end - self._start < HEADER_SIZE:
                self._need_more()
                return None
            self._parse_header(into)
            state = self._state
        if state == _BODY:
            body_end = self._start + self._length + self._trailer_size()
            if body_end > self._end:
                self._need_more()
                return None
            payload_end = self._start + self._length
            if into is not None:
                into[: self._length] = self._view[self._start : payload_end]
                payload: Buffer = into[: self._length]
            else:
                payload = bytes(self._view[self._start : payload_end])
            trailer = bytes(self._buf[payload_end:body_end])
            self._start = body_end
            self._state = _HEADER_STATE
            return payload, trailer
        if state == _PAYLOAD:
            if self._end > self._start and self._filled < self._length:
                self._move_buffered_payload()  # payload bytes arrived through feed_data
            if self._filled < self._length:
                self._need_more()
                return None
            self._state = state = _TRAILER_STATE
        if state == _TRAILER_STATE:
            size = self._trailer_size()
            if self._end - self._start < size:
                self._need_more()
                return None
            trailer = bytes(self._buf[self._start : self._start + size])
            self._start += size
            target, view = self._target, self._target_view
            self._target = self._target_view = None
            self._borrowed = False
            self._state = _HEADER_STATE
            if isinstance(target, bytes):
                return target, trailer
            if isinstance(target, bytearray):
                return bytes(target), trailer  # the portable path (see _buffers)
            assert view is not None  # the caller's buffer (next_frame_into)
            return view, trailer
        raise AssertionError(f"unknown decoder state {state}")

    def _need_more(self) -> None:
        if not self._eof:
            return None
        if self._state == _HEADER_STATE and self._start == self._end:
            raise ConnectionClosedError("the peer closed the connection")
        got = self.buffered
        raise self._fail(
            IncompleteMessageError(
                f"the peer closed the connection in the middle of a message"
                f" ({got} bytes of an unfinished frame were received)"
            )
        )

    def _parse_header(self, into: memoryview | None) -> None:
        magic, version, flags, reserved, length = _HEADER.unpack_from(self._buf, self._start)
        if magic != MAGIC:
            raise self._fail(
                ProtocolError(
                    f"not an npipes frame (magic {magic!r}, expected {MAGIC!r}); is the"
                    " peer using another framing?"
                )
            )
        if version != VERSION:
            raise self._fail(
                ProtocolError(f"unsupported frame version {version}; this npipes reads {VERSION}")
            )
        if flags & ~_KNOWN_FLAGS:
            raise self._fail(ProtocolError(f"reserved flag bits set: 0x{flags:02x}"))
        if reserved:
            raise self._fail(ProtocolError(f"reserved header field is not zero: {reserved:#x}"))
        limit = self.max_message_size
        if length > MAX_SIZE:  # only with limit None: no object can be that big
            raise self._fail(
                MessageTooLargeError(
                    f"the peer announced a {length}-byte message, more than any object can"
                    " hold; is the peer using another framing?",
                    size=length,
                    limit=MAX_SIZE,
                )
            )
        if limit is not None and length > limit:
            raise self._fail(
                MessageTooLargeError(
                    f"the peer sent a {length}-byte message; max_message_size is {limit}."
                    " Raise max_message_size on this side if that is expected.",
                    size=length,
                    limit=limit,
                )
            )
        if into is not None and length > len(into):
            # Checked before anything is consumed, so recv() can still take it.
            raise BufferTooSmallError(
                f"the next message is {length} bytes; the buffer holds {len(into)}",
                size=length,
            )
        self._start += HEADER_SIZE
        self._flags = flags
        self._length = length
        trailer = self._trailer_size()
        if into is None and length < _LARGE and HEADER_SIZE + length + trailer <= len(self._buf):
            self._state = _BODY
            self._large_run = False
            return
        self._large_run = into is None and length >= _LARGE
        # Large frame (or caller's buffer): the payload gets its own storage,
        # allocated once its first bytes are here (a bare header costs nothing).
        self._filled = 0
        self._target = self._target_view = None
        self._state = _PAYLOAD
        if into is not None:
            self._borrow(into)
        if self._end > self._start:
            self._move_buffered_payload()

    def _borrow(self, into: memoryview) -> None:
        self._target, self._target_view = into, into[: self._length]
        self._borrowed = True

    def _grow_target(self) -> memoryview:
        """Give the payload room for more bytes; memory follows what arrived (module doc)."""
        length = self._length
        old = self._target_view
        size = length if length <= _EAGER else min(length, max(_EAGER, 4 * self._filled))
        try:
            target, view = allocate(size)
        except MemoryError as exc:
            raise self._fail(
                MessageTooLargeError(
                    f"cannot allocate {size} bytes for the peer's {length}-byte message;"
                    " set max_message_size to refuse such messages up front",
                    size=length,
                    limit=self.max_message_size or MAX_SIZE,
                )
            ) from exc
        if self._filled:
            assert old is not None
            view[: self._filled] = old[: self._filled]
        self._target, self._target_view = target, view
        return view

    def _move_buffered_payload(self) -> None:
        # Payload bytes that came in the same read as the header, or through feed_data.
        while self._end > self._start and self._filled < self._length:
            target = self._target_view
            if target is None or self._filled == len(target):
                target = self._grow_target()
            have = min(self._end - self._start, len(target) - self._filled)
            target[self._filled : self._filled + have] = self._view[
                self._start : self._start + have
            ]
            self._start += have
            self._filled += have

    def _finish(self, parts: tuple[Buffer, bytes], into: memoryview | None = None) -> Frame:
        payload, trailer = parts
        flags = self._flags
        size = memoryview(payload).nbytes
        if flags & FLAG_CRC:
            (expected,) = _TRAILER.unpack(trailer)
            actual = crc32(payload)
            if actual != expected:
                raise ChecksumError(
                    f"CRC-32 mismatch in a {size}-byte message (got {actual:#010x},"
                    f" frame says {expected:#010x}); the message was dropped"
                )
        elif self.require_crc:
            raise ChecksumError(
                "the peer sent a message without a CRC-32 but this side requires one"
                " (crc=True); the message was dropped. Open the peer with crc=True too."
            )
        message: bytes | str
        if flags & FLAG_TEXT:
            try:
                message = str(payload, "utf-8")
            except UnicodeDecodeError as exc:
                raise ProtocolError(
                    f"a TEXT message is not valid UTF-8 ({exc.reason} at byte {exc.start});"
                    " the message was dropped"
                ) from exc
        elif into is not None:
            message = b""
        else:
            message = payload if isinstance(payload, bytes) else bytes(payload)
        return Frame(message, size, bool(flags & FLAG_CRC))
