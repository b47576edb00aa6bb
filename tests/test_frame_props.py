"""Property tests of the codec: any messages, split anywhere, come back the same;
any bytes give frames or typed errors, never anything else."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import npipes
from npipes._frame import FrameDecoder, encode_frame

messages = st.one_of(st.binary(max_size=300), st.text(max_size=100))


@given(
    st.lists(st.tuples(messages, st.booleans()), max_size=20),
    st.lists(st.integers(min_value=1, max_value=97), min_size=1),
    st.integers(min_value=20, max_value=256),
)
def test_round_trip_any_split(
    items: list[tuple[bytes | str, bool]], cuts: list[int], buffer_size: int
) -> None:
    stream = b"".join(encode_frame(m, crc=c) for m, c in items)
    decoder = FrameDecoder(buffer_size=buffer_size)
    out: list[bytes | str] = []
    pos, i = 0, 0
    while pos < len(stream):
        buf = decoder.get_buffer()
        n = min(len(buf), cuts[i % len(cuts)], len(stream) - pos)
        assert n > 0
        buf[:n] = stream[pos : pos + n]
        decoder.buffer_updated(n)
        pos += n
        i += 1
        out.extend(f.message for f in decoder)
    decoder.feed_eof()
    assert out == [m for m, _ in items]
    assert [type(m) for m in out] == [type(m) for m, _ in items]
    assert decoder.idle


@given(st.lists(messages, max_size=10), st.integers(min_value=1, max_value=50))
def test_round_trip_feed_data(items: list[bytes | str], chunk: int) -> None:
    stream = b"".join(encode_frame(m) for m in items)
    decoder = FrameDecoder(buffer_size=64)
    out = []
    for i in range(0, len(stream), chunk):
        decoder.feed_data(stream[i : i + chunk])
        out.extend(f.message for f in decoder)
    assert out == items


EXPECTED = (
    npipes.ProtocolError,
    npipes.ChecksumError,
    npipes.MessageTooLargeError,
    npipes.ConnectionClosedError,
)


@settings(max_examples=300)
@given(st.binary(max_size=200), st.integers(min_value=1, max_value=64))
def test_fuzz_random_bytes(data: bytes, chunk: int) -> None:
    decoder = FrameDecoder(max_message_size=1000)
    try:
        for i in range(0, len(data), chunk):
            decoder.feed_data(data[i : i + chunk])
            while True:
                try:
                    if decoder.next_frame() is None:
                        break
                except (npipes.ChecksumError, npipes.ProtocolError):
                    if decoder.broken:
                        raise
        decoder.feed_eof()
        while decoder.next_frame() is not None:
            pass
    except EXPECTED:
        pass


@settings(max_examples=300)
@given(
    st.lists(st.tuples(messages, st.booleans()), min_size=1, max_size=5),
    st.integers(min_value=0),
    st.integers(min_value=0, max_value=255),
)
def test_fuzz_mutated_frames(items: list[tuple[bytes | str, bool]], where: int, value: int) -> None:
    data = bytearray(b"".join(encode_frame(m, crc=c) for m, c in items))
    data[where % len(data)] = value
    decoder = FrameDecoder(max_message_size=10_000)
    decoder.feed_data(bytes(data))
    decoder.feed_eof()
    try:
        while True:
            try:
                decoder.next_frame()
            except (npipes.ChecksumError, npipes.ProtocolError):
                if decoder.broken:
                    raise
    except EXPECTED:
        pass
