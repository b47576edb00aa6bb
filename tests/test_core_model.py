"""The sans-I/O connection core against a model: random sends, splits, faults and calls.

Two ``ConnectionCore`` objects are wired by an in-memory byte channel, with no
sockets, so hypothesis can explore every interleaving of sends (whole, batched,
torn, corrupt), arbitrary read splits, decoding ahead, timeouts mid-frame and end
of stream. The model says what each receive must return; the core must agree on
every step. This is the proof behind the rules in docs/reliability.md: a message
arrives whole and in order, or a typed error takes its place; nothing is lost
silently, nothing is spliced; read-ahead stays within its budget.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import npipes
from npipes._frame import HEADER_SIZE, encode_frame
from npipes._framings import get_codec
from npipes._protocol import ITEM_COST, READ_AHEAD, ConnectionCore, State

MAX_SIZE = 1 << 20
LARGEST = 70_000  # the largest payload below

payloads = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=32),
    st.binary(min_size=1000, max_size=LARGEST),
)
crc_choices = st.sampled_from([None, False, True])


class Kind(enum.Enum):
    MESSAGE = "message"
    BAD_CRC = "a message whose CRC does not match"
    FATAL = "a frame that loses the framing"
    TORN = "the start of a frame whose sender broke"


@dataclass
class Entry:
    """One frame in the channel, in stream coordinates."""

    end: int  # stream offset just past its last byte
    kind: Kind
    message: bytes | str = b""
    crc: bool = False
    error: type[Exception] = npipes.ProtocolError  # what a FATAL frame raises


def make_core(crc: bool) -> ConnectionCore:
    return ConnectionCore(
        get_codec("npipes"),
        crc=crc,
        max_message_size=MAX_SIZE,
        message_mode=False,
        name="model",
        address="memory",
    )


class CoreModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sender = make_core(crc=False)
        self.receiver = make_core(crc=False)
        self.channel = bytearray()  # written, not yet read by the receiver
        self.written = 0  # stream offset of the next byte written
        self.fed = 0  # stream offset of the next byte the receiver reads
        self.entries: deque[Entry] = deque()  # frames not yet delivered
        self.sender_state = "open"  # "open", "ended" (peer left), "broken"
        self.eof = False  # the receiver saw end of stream
        self.broken_at: int | None = None  # a receive stopped mid-frame at this offset
        self.done = False  # every receive now raises ConnectionClosedError
        self.drained = False  # a timeout decoded every whole frame read, past the budget

    # -- the sender -----------------------------------------------------------

    def _write(self, data: bytes, entry: Entry | None) -> None:
        self.channel += data
        self.written += len(data)
        if entry is not None:
            entry.end = self.written
            self.entries.append(entry)

    def _can_write(self) -> bool:
        return not self.eof

    @precondition(lambda self: self._can_write())
    @rule(message=payloads, crc=crc_choices)
    def send(self, message: bytes | str, crc: bool | None) -> None:
        if self.sender_state != "open":
            with pytest.raises(npipes.ConnectionClosedError):
                self.sender.encode(message, crc)
            return
        data = b"".join(bytes(part) for part in self.sender.encode(message, crc))
        self._write(data, Entry(0, Kind.MESSAGE, message, bool(crc)))

    @precondition(lambda self: self._can_write())
    @rule(messages=st.lists(payloads, max_size=6), crc=crc_choices)
    def send_many(self, messages: list[bytes | str], crc: bool | None) -> None:
        if self.sender_state != "open":
            with pytest.raises(npipes.ConnectionClosedError):
                self.sender.encode_many(messages, crc)
            return
        writes, count = self.sender.encode_many(messages, crc)
        assert count == len(messages)
        data = b"".join(bytes(part) for write in writes for part in write)
        # Each frame's end, from the frames one by one: packing must not change the bytes.
        assert data == b"".join(encode_frame(m, crc=bool(crc)) for m in messages)
        offset = self.written
        self._write(data, None)
        for m in messages:
            offset += len(encode_frame(m, crc=bool(crc)))
            self.entries.append(Entry(offset, Kind.MESSAGE, m, bool(crc)))

    @precondition(lambda self: self._can_write() and self.sender_state == "open")
    @rule(count=st.integers(min_value=1, max_value=12), size=st.sampled_from([0, 30_000, LARGEST]))
    def send_burst(self, count: int, size: int) -> None:
        """Many messages at once, so the receiver's read-ahead budget is put to the test."""
        for i in range(count):
            message = bytes([i % 256]) * size
            data = b"".join(bytes(part) for part in self.sender.encode(message))
            self._write(data, Entry(0, Kind.MESSAGE, message))

    @precondition(lambda self: self._can_write() and self.sender_state == "open")
    @rule(message=st.binary(min_size=1, max_size=200), index=st.integers(min_value=0))
    def send_corrupt(self, message: bytes, index: int) -> None:
        """A frame whose payload changed on the way (the CRC catches it)."""
        frame = bytearray(encode_frame(message, crc=True))
        frame[HEADER_SIZE + index % len(message)] ^= 0x01
        self._write(bytes(frame), Entry(0, Kind.BAD_CRC))

    @precondition(lambda self: self._can_write() and self.sender_state == "open")
    @rule(too_large=st.booleans())
    def send_fatal(self, too_large: bool) -> None:
        """A bad magic, or a length above max_message_size: framing is lost."""
        error: type[Exception] = npipes.ProtocolError
        if too_large:
            header = bytearray(encode_frame(b""))
            header[8:16] = (MAX_SIZE + 1).to_bytes(8, "little")
            error = npipes.MessageTooLargeError
        else:
            header = bytearray(b"XX" + bytes(HEADER_SIZE - 2))
        self._write(bytes(header), Entry(0, Kind.FATAL, error=error))

    @precondition(lambda self: self._can_write() and self.sender_state == "open")
    @rule(message=st.binary(min_size=1, max_size=5000), cut=st.integers(min_value=1))
    def send_torn(self, message: bytes, cut: int) -> None:
        """A send that timed out after part of its frame went out: the sender breaks."""
        frame = encode_frame(message, crc=True)
        self._write(frame[: 1 + cut % (len(frame) - 1)], Entry(0, Kind.TORN))
        exc = npipes.PipeTimeoutError("timed out", partial=True)
        self.sender.send_failed(exc)
        assert self.sender.state is State.BROKEN
        self.sender_state = "broken"

    @precondition(lambda self: self.sender_state == "open")
    @rule(nothing_out=st.booleans())
    def send_fails_cleanly(self, nothing_out: bool) -> None:
        """A timeout before any byte went out leaves it usable; the peer leaving ends sending."""
        if nothing_out:
            self.sender.send_failed(npipes.PipeTimeoutError("timed out", partial=False))
            assert self.sender.state is State.OPEN
        else:
            self.sender.send_failed(npipes.ConnectionClosedError("the peer closed the connection"))
            assert self.sender.state is State.OPEN
            self.sender_state = "ended"

    # -- the receiver's stream ------------------------------------------------

    def _reading(self) -> bool:
        """A driver reads, and times out, only while the connection is open."""
        open_ = self.receiver.state is State.OPEN
        return open_ and not self.eof and self.broken_at is None and not self.done

    @precondition(lambda self: self._reading())
    @rule(
        nbytes=st.one_of(st.integers(min_value=1, max_value=100_000), st.just(1 << 30)),
        copy=st.booleans(),
    )
    def feed(self, nbytes: int, copy: bool) -> None:
        """Bytes arrive, in any split: through get_buffer/buffer_updated or receive_data."""
        take = bytes(self.channel[:nbytes])
        del self.channel[: len(take)]
        self.fed += len(take)
        if copy:
            if take:
                self.receiver.receive_data(take)
            return
        view = memoryview(take)
        while view:
            buf = self.receiver.get_buffer()
            assert len(buf) > 0, "get_buffer must always give room"
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            self.receiver.buffer_updated(n)
            view = view[n:]

    @precondition(lambda self: self._reading())
    @rule()
    def end_of_stream(self) -> None:
        self.receiver.buffer_updated(0)
        self.eof = True

    @rule()
    def decode_ahead(self) -> None:
        self.receiver.decode_available()

    @precondition(lambda self: self._reading())
    @rule()
    def timeout(self) -> None:
        """A receive timed out: harmless between frames, breaks the connection mid-frame."""
        exc = npipes.PipeTimeoutError("timed out")
        self.receiver.recv_failed(exc)
        self.drained = True
        if any(e.kind is Kind.FATAL and e.end <= self.fed for e in self.entries):
            return  # the framing error is decoded first and breaks it (not "partial")
        mid_frame = self.fed != self._last_boundary()
        assert exc.partial is mid_frame
        if mid_frame:
            self.broken_at = self.fed

    def _last_boundary(self) -> int:
        """Offset just past the last frame wholly fed."""
        boundary = self._delivered_end
        for entry in self.entries:
            if entry.end > self.fed or entry.kind is Kind.TORN:
                break
            boundary = entry.end
        return boundary

    _delivered_end = 0  # stream offset past the last frame delivered

    # -- what a receive must return ---------------------------------------------

    def _expected(self, require_crc: bool) -> tuple[str, object]:
        """("message", m), ("error", ErrorType) or ("none", None); pops what it consumes."""
        if self.done:
            return "error", npipes.ConnectionClosedError
        if self.entries:
            head = self.entries[0]
            if head.kind is not Kind.TORN and head.end <= self.fed:
                self.entries.popleft()
                self._delivered_end = head.end
                if head.kind is Kind.FATAL:
                    self.done = True
                    return "error", head.error
                if head.kind is Kind.BAD_CRC or (require_crc and not head.crc):
                    return "error", npipes.ChecksumError
                return "message", head.message
        if self.broken_at is not None:
            self.done = True
            return "error", npipes.ConnectionClosedError
        if self.eof:
            self.done = True
            if self.fed == self._delivered_end:
                return "error", npipes.ConnectionClosedError
            return "error", npipes.IncompleteMessageError
        return "none", None

    def _check(self, require_crc: bool, call: object) -> None:
        kind, value = self._expected(require_crc)
        if kind == "error":
            assert isinstance(value, type)
            with pytest.raises(value) as info:
                call()  # type: ignore[operator]
            if value is npipes.ConnectionClosedError and self.fed == self._delivered_end:
                assert not isinstance(info.value, npipes.IncompleteMessageError)
            return
        got = call()  # type: ignore[operator]
        if kind == "none":
            assert got is None
        else:
            assert got == value
            assert type(got) is type(value)

    @rule(crc=st.booleans())
    def recv(self, crc: bool) -> None:
        self._check(crc, lambda: self.receiver.next_message(crc))

    @rule(size=st.integers(min_value=0, max_value=80_000))
    def recv_into(self, size: int) -> None:
        """Into a caller's buffer (decoded first, as asyncio does): too small consumes nothing."""
        view = memoryview(bytearray(size))
        head = self.entries[0] if self.entries else None
        if (
            not self.done
            and head is not None
            and head.kind is Kind.MESSAGE
            and head.end <= self.fed
        ):
            payload = head.message.encode() if isinstance(head.message, str) else head.message
            if len(payload) > size:
                with pytest.raises(npipes.BufferTooSmallError):
                    self.receiver.next_message_into(view, direct=False)
                return
            got = self.receiver.next_message_into(view, direct=False)
            self.entries.popleft()
            self._delivered_end = head.end
            assert got == len(payload)
            assert bytes(view[:got]) == payload
            return
        kind, value = self._expected(False)
        if kind == "error":
            assert isinstance(value, type)
            with pytest.raises(value):
                self.receiver.next_message_into(view, direct=False)
        else:
            assert kind == "none"
            assert self.receiver.next_message_into(view, direct=False) is None

    @rule(limit=st.integers(min_value=1, max_value=8))
    def recv_many(self, limit: int) -> None:
        """take_ready returns whole messages in order and leaves errors for the next call."""
        got = self.receiver.take_ready(limit)
        assert len(got) <= limit
        for message in got:
            head = self.entries.popleft()
            assert head.kind is Kind.MESSAGE
            assert head.end <= self.fed
            assert message == head.message
            assert type(message) is type(head.message)
            self._delivered_end = head.end
        if len(got) < limit and not self.done and self.entries:
            head = self.entries[0]
            # It stopped early only at something that is not a plain message yet.
            assert head.kind is not Kind.MESSAGE or head.end > self.fed

    # -- invariants -------------------------------------------------------------

    @invariant()
    def read_ahead_is_bounded(self) -> None:
        # The budget may be passed by at most the one item that crossed it; a
        # timeout keeps every whole frame already read, past the budget.
        ready = self.receiver._ready_bytes
        if ready < READ_AHEAD + LARGEST + ITEM_COST:
            self.drained = False
        else:
            assert self.drained, "decoded past the read-ahead budget"
        assert ready == sum(
            ITEM_COST + (0 if isinstance(item, npipes.NpipesError) else item.size)
            for item in self.receiver._ready
        )

    @invariant()
    def closed_only_when_no_message_is_left(self) -> None:
        if not self.receiver.closed or self.done:
            return  # once done, frames after the end are never delivered
        for entry in self.entries:
            if entry.kind in (Kind.FATAL, Kind.TORN) or entry.end > self.fed:
                break
            assert entry.kind is not Kind.MESSAGE, "closed with a message still to deliver"


TestCoreModel = CoreModel.TestCase
TestCoreModel.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
