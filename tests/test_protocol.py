"""The sans-I/O connection core on its own: no sockets, no threads, every rule once."""

from __future__ import annotations

import pytest

import npipes
from npipes._frame import encode_frame
from npipes._framings import get_codec
from npipes._protocol import (
    MAX_HANDSHAKE_MESSAGE,
    READ_AHEAD,
    ConnectionCore,
    State,
    accept_side,
    connect_side,
)


def make_core(framing: str = "npipes", **kw: object) -> ConnectionCore:
    options: dict[str, object] = {
        "crc": False,
        "max_message_size": 1 << 20,
        "message_mode": False,
        "name": "t",
        "address": "/x/t.sock",
    }
    options.update(kw)
    return ConnectionCore(get_codec(framing), **options)  # type: ignore[arg-type]


def feed(core: ConnectionCore, data: bytes) -> None:
    """Feed through get_buffer/buffer_updated like a transport does."""
    view = memoryview(data)
    while view:
        buf = core.get_buffer()
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        core.buffer_updated(n)
        view = view[n:]


def test_messages_then_error_in_stream_order() -> None:
    core = make_core()
    feed(core, encode_frame(b"one") + encode_frame("two") + b"XX" + b"\0" * 14)
    core.decode_available()
    assert core.next_message() == b"one"
    assert core.next_message() == "two"
    with pytest.raises(npipes.ProtocolError):
        core.next_message()
    assert core.state is State.BROKEN
    with pytest.raises(npipes.ConnectionClosedError):
        core.next_message()


def test_crc_requirement_is_per_call_and_drops_only_that_message() -> None:
    core = make_core()
    feed(core, encode_frame(b"plain") + encode_frame(b"checked", crc=True))
    with pytest.raises(npipes.ChecksumError):
        core.next_message(crc=True)
    assert core.state is State.OPEN
    assert core.next_message(crc=True) == b"checked"


def test_crc_option_type_and_framing_checked_at_the_call() -> None:
    with pytest.raises(TypeError, match="crc must be"):
        make_core().encode(b"x", crc="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no checksum"):
        make_core("lines").encode("x", crc=True)


def test_clean_end_only_ends_receiving_once_delivered() -> None:
    core = make_core()
    feed(core, encode_frame(b"last"))
    core.receive_eof()
    core.decode_available()
    assert core.state is State.OPEN  # a reply to a half-closed peer is still possible
    core.encode(b"reply")
    assert core.next_message() == b"last"
    with pytest.raises(npipes.ConnectionClosedError) as info:
        core.next_message()
    assert type(info.value) is npipes.ConnectionClosedError
    assert core.receive_ended
    assert core.closed
    with pytest.raises(npipes.ConnectionClosedError):
        core.next_message()  # for ever after
    core.encode(b"a reply to a peer that only half-closed")
    core.close()
    with pytest.raises(npipes.ConnectionClosedError):
        core.encode(b"x")


def test_end_mid_frame_is_incomplete_and_breaks() -> None:
    core = make_core()
    feed(core, encode_frame(b"x" * 100)[:50])
    core.receive_eof()
    with pytest.raises(npipes.IncompleteMessageError):
        core.next_message()
    assert core.state is State.BROKEN


@pytest.mark.parametrize(
    ("exc", "usable"),
    [
        (npipes.PipeTimeoutError("t", partial=False), True),
        (npipes.PipeTimeoutError("t", partial=True), False),
        (KeyboardInterrupt(), False),
        (OverflowError(), False),
        (npipes.ConnectionClosedError("gone"), False),
    ],
)
def test_send_failure_rule(exc: BaseException, usable: bool) -> None:
    core = make_core()
    core.send_failed(exc)
    try:
        core.encode(b"next")
    except npipes.ConnectionClosedError:
        sendable = False
    else:
        sendable = True
    assert sendable is usable
    if isinstance(exc, npipes.ConnectionClosedError):
        # The peer is gone: sending is over, but what it sent before is still received.
        assert core.state is State.OPEN
    else:
        assert (core.state is State.OPEN) is usable


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), npipes.PipeTimeoutError("t")])
def test_recv_failure_touching_nothing_leaves_it_usable(exc: BaseException) -> None:
    core = make_core()
    core.recv_failed(exc)
    assert core.state is State.OPEN


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), npipes.PipeTimeoutError("t")])
def test_recv_failure_mid_frame_breaks(exc: BaseException) -> None:
    core = make_core()
    feed(core, encode_frame(b"x" * 100)[:30])
    assert core.next_message() is None
    core.recv_failed(exc)
    assert core.state is State.BROKEN
    if isinstance(exc, npipes.PipeTimeoutError):
        assert exc.partial


def test_bytes_a_read_delivered_before_an_interrupt_are_kept() -> None:
    core = make_core()
    frame = encode_frame(b"whole")
    buf = core.get_buffer()
    buf[: len(frame)] = frame
    interrupt = KeyboardInterrupt()
    interrupt.npipes_received = len(frame)  # type: ignore[attr-defined]
    core.recv_failed(interrupt)
    assert core.state is State.OPEN
    assert core.next_message() == b"whole"


def test_read_ahead_is_bounded_in_bytes() -> None:
    core = make_core(max_message_size=None)
    message = encode_frame(b"m" * 60_000)
    fed = 0
    while core.wants_data():
        feed(core, message)
        fed += 1
        core.decode_available()
        assert fed < 100
    assert READ_AHEAD <= core._ready_bytes < READ_AHEAD + 60_000
    assert core.next_message() == b"m" * 60_000
    assert core.wants_data()


def test_handshake_caps_messages_before_reading_them() -> None:
    core = make_core(max_message_size=None)
    steps = core.handshake(connect_side(b"key"))
    assert next(steps) is None  # waiting for the challenge
    # A header announcing 1 GiB is refused from the header alone.
    feed(core, encode_frame(b"")[:8] + (1 << 30).to_bytes(8, "little"))
    with pytest.raises(npipes.MessageTooLargeError):
        core.next_message()
    steps.close()
    assert core.state is State.BROKEN


def test_handshake_decodes_one_message_ahead_and_restores_the_limit() -> None:
    listener_side = make_core()
    client_side = make_core()
    server = listener_side.handshake(accept_side(b"k"))
    client = client_side.handshake(connect_side(b"k"))
    to_client = next(server)
    assert next(client) is None
    pending = {"server": to_client, "client": None}
    # Drive both sides by hand until both finish.
    done = set()
    while len(done) < 2:
        for side, steps, core, other in (
            ("server", server, listener_side, client_side),
            ("client", client, client_side, listener_side),
        ):
            if side in done:
                continue
            out = pending[side]
            if out is None:
                message = core.next_message()
                if message is None:
                    continue
                try:
                    pending[side] = steps.send(message)
                except StopIteration:
                    done.add(side)
                    continue
            else:
                feed(other, encode_frame(out))
                other.decode_available()
                assert len(other._ready) <= 1  # one message ahead while handshaking
                try:
                    pending[side] = steps.send(None)
                except StopIteration:
                    done.add(side)
    assert listener_side._decoder.max_message_size == 1 << 20
    assert client_side.state is State.OPEN
    assert listener_side.state is State.OPEN
    assert MAX_HANDSHAKE_MESSAGE == 256


def test_handshake_with_a_wrong_key_breaks_both() -> None:
    a, b = make_core(), make_core()
    server, client = a.handshake(accept_side(b"k1")), b.handshake(connect_side(b"k2"))
    challenge = next(server)
    assert next(client) is None
    response = client.send(challenge)
    assert isinstance(response, bytes)
    failure = server.send(None)
    assert failure is None
    assert server.send(response) == b"#FAILURE#"  # told to the peer, then raised here
    with pytest.raises(npipes.AuthenticationError):
        server.send(None)
    assert a.state is State.BROKEN


def test_send_many_packs_small_frames_and_checks_all_first() -> None:
    core = make_core()
    writes, count = core.encode_many([b"a", "b", b"c" * 70_000])
    assert count == 3
    assert len(writes) == 1
    assert len(writes[0]) == 2
    with pytest.raises(npipes.MessageTooLargeError):
        core.encode_many([b"ok", b"x" * (2 << 20)])


def test_recv_into_queued_message_too_small_consumes_nothing() -> None:
    core = make_core()
    feed(core, encode_frame(b"0123456789"))
    core.decode_available()
    with pytest.raises(npipes.BufferTooSmallError):
        core.next_message_into(memoryview(bytearray(4)), direct=False)
    buf = bytearray(16)
    assert core.next_message_into(memoryview(buf), direct=False) == 10
    assert bytes(buf[:10]) == b"0123456789"


def test_take_ready_leaves_errors_for_the_next_call() -> None:
    core = make_core()
    feed(core, encode_frame(b"1") + encode_frame(b"2") + b"garbage-garbage-")
    assert core.next_message() == b"1"
    assert core.take_ready(10) == [b"2"]
    with pytest.raises(npipes.ProtocolError):
        core.next_message()


def test_pre_authentication_limits_hold_before_the_handshake_starts() -> None:
    # An asyncio transport may read before the driver starts the handshake.
    core = make_core(max_message_size=None, authenticating=True)
    feed(core, encode_frame(b"")[:8] + (1 << 30).to_bytes(8, "little"))
    core.decode_available()
    with pytest.raises(npipes.MessageTooLargeError):
        core.next_message()


def test_after_the_handshake_the_configured_limit_is_back() -> None:
    core = make_core(authenticating=True)
    steps = core.handshake(connect_side(b"key"))
    next(steps)
    steps.close()
    assert core._decoder.max_message_size == 1 << 20


def test_bytes_refused_as_they_arrive_take_their_place_in_the_stream() -> None:
    # A pipe message without its own length passes the limit while arriving.
    core = make_core("raw", message_mode=True, max_message_size=10)
    buf = core.get_buffer()
    buf[:4] = b"okay"
    core.buffer_updated(4, message_end=True)
    assert core.next_message() == b"okay"  # drivers decode before reading on
    for _ in range(3):
        buf = core.get_buffer()
        n = min(len(buf), 5)
        buf[:n] = b"x" * n
        core.buffer_updated(n, message_end=False)
    with pytest.raises(npipes.MessageTooLargeError):
        core.next_message()
    assert core.state is State.BROKEN


def test_a_size_the_backend_refuses_before_writing_leaves_it_usable() -> None:
    core = make_core()
    core.send_failed(npipes.MessageTooLargeError("over a DWORD", size=1 << 32, limit=(1 << 32) - 1))
    assert core.state is State.OPEN


def test_a_timeout_with_whole_frames_waiting_past_the_budget_is_not_mid_frame() -> None:
    """Frames read whole but not yet decoded (read-ahead full) are no torn frame: a
    timeout keeps them all and leaves the connection open (found by test_core_model)."""
    core = make_core()
    messages = [bytes([i]) * 70_000 for i in range(5)]
    feed(core, b"".join(encode_frame(m) for m in messages))
    core.decode_available()
    exc = npipes.PipeTimeoutError("timed out")
    core.recv_failed(exc)
    assert core.state is State.OPEN
    assert exc.partial is False
    assert [core.next_message() for _ in messages] == messages


def test_get_buffer_after_the_framing_broke_gives_room_and_drops_the_bytes() -> None:
    """asyncio's proactor feeds one read through get_buffer in a loop, even after the
    protocol aborted the transport: the core must not raise there."""
    core = make_core()
    feed(core, encode_frame(b"one") + b"XX" + b"\0" * 14)
    core.decode_available()
    assert core.state is State.BROKEN
    for _ in range(3):
        buf = core.get_buffer()
        assert len(buf) > 0
        buf[:1] = b"x"
        core.buffer_updated(1)
    assert core.next_message() == b"one"
    with pytest.raises(npipes.ProtocolError, match="magic"):
        core.next_message()
