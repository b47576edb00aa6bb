"""Issue 13: large messages are read straight into their own objects, not copied
through the decoder's read buffer (the copy that held 64 KiB messages at 0.75-0.81x
the raw loop). Sans-I/O: a greedy reader fills whatever ``get_buffer()`` offers, like
``recv_into`` on a socket that already holds many frames."""

from __future__ import annotations

import pytest

import npipes
from npipes._frame import FrameDecoder, encode_frame


def _read_all(decoder: FrameDecoder, stream: bytes) -> tuple[list[bytes | str], int]:
    """Decode ``stream``; return the messages and how many bytes went through the read buffer."""
    messages: list[bytes | str] = []
    through_buffer = pos = 0
    while pos < len(stream):
        view = decoder.get_buffer()
        take = min(len(view), len(stream) - pos)
        view[:take] = stream[pos : pos + take]
        if view.obj is decoder._buf:  # the read buffer, not a payload's own object
            through_buffer += take
        decoder.buffer_updated(take)
        pos += take
        while (frame := decoder.next_frame()) is not None:
            messages.append(frame.message)
    return messages, through_buffer


@pytest.mark.parametrize("crc", [False, True])
@pytest.mark.parametrize("size", [64 * 1024, 1 << 20])
def test_large_messages_skip_the_read_buffer(size: int, crc: bool) -> None:
    payloads = [bytes([n]) * size for n in range(8)]
    stream = b"".join(encode_frame(p, crc=crc) for p in payloads)
    messages, through_buffer = _read_all(FrameDecoder(max_message_size=None), stream)
    assert messages == payloads
    # The first message's first read is greedy (its size is not known yet); after it,
    # only headers and trailers go through the read buffer.
    assert through_buffer <= 64 * 1024 + 8 * 20


def test_small_messages_after_large_ones_are_batched_again() -> None:
    large = [b"L" * 65536] * 3
    small = [b"s%d" % n for n in range(2000)]
    stream = b"".join(encode_frame(p) for p in large + small + large + small)
    decoder = FrameDecoder(max_message_size=None)
    messages, _ = _read_all(decoder, stream)
    assert messages == large + small + large + small
    reads = 0
    pos = 0
    decoder = FrameDecoder(max_message_size=None)
    tail = b"".join(encode_frame(p) for p in large + small)
    while pos < len(tail):
        view = decoder.get_buffer()
        take = min(len(view), len(tail) - pos)
        view[:take] = tail[pos : pos + take]
        decoder.buffer_updated(take)
        pos += take
        reads += 1
        while decoder.next_frame() is not None:
            pass
    # 2000 small frames (~38 KiB) take a few reads, not one per frame.
    assert reads < 3 * 3 + 20


@pytest.mark.parametrize("crc", [False, True])
def test_large_text_binary_and_require_crc_mixed(crc: bool) -> None:
    # The large-payload fast path takes only binary frames without CRC; text, CRC
    # frames and a required CRC go the general way, with the same results.
    payloads: list[bytes | str] = ["\u20ac" * 30000, b"b" * 70000, "t" * 40000, b"c" * 33000]
    stream = b"".join(encode_frame(p, crc=crc) for p in payloads)
    messages, _ = _read_all(FrameDecoder(max_message_size=None, require_crc=crc), stream)
    assert messages == payloads
    with pytest.raises(npipes.ChecksumError):
        _read_all(FrameDecoder(max_message_size=None, require_crc=True), encode_frame(b"x" * 70000))
