"""Property tests of every decoder (issue 10 §7): random bytes split at random points
give messages or NpipesError subclasses, never another exception; a broken decoder
keeps raising typed errors; buffers stay within the limits; valid streams, however
they are cut and whichever entry point reads them, decode to what was sent.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npipes import BufferTooSmallError, ChecksumError, NpipesError, ProtocolError
from npipes._frame import FrameDecoder, encode_frame
from npipes._framings import get_codec

# (framing, message_mode): every decoder a codec can make.
DECODERS = [
    ("npipes", False),
    ("multiprocessing", False),
    ("multiprocessing", True),
    ("npipes1", False),
    ("raw", False),
    ("raw", True),
    ("lines", False),
    ("dotnet", False),
]
IDS = [f"{f}{'-messages' if m else ''}" for f, m in DECODERS]
KiB = 1024
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Random bytes, biased towards what parsers look at: headers of each framing.
PREFIXES = st.sampled_from(
    [
        b"",
        b"NP\x01\x00\x00\x00\x00\x00",
        b"NP\x01\x01\x00\x00\x00\x00",
        b"NP\x01\x02\x00\x00\x00\x00",
        b"\xff\xff\xff\xff",
        b"\x00\x00\x00",
        b"\x00\x00\x00\x08\x00\x00\x00\x00",
        b"\x00\x04",
    ]
)
STREAMS = st.lists(st.tuples(PREFIXES, st.binary(max_size=64)), max_size=12).map(
    lambda parts: b"".join(p + b for p, b in parts)
)
LIMITS = st.sampled_from([None, 0, 1, 16, 256, 4000])


def _make(framing: str, message_mode: bool, limit: int | None, require_crc: bool = False) -> Any:
    return get_codec(framing).decoder(
        max_message_size=limit, require_crc=require_crc, message_mode=message_mode
    )


def _room_bound(limit: int | None) -> int:
    # A decoder's read buffer: 64 KiB, or what one message within the limit needs; with
    # no limit a header may earn at most the v1 eager allocation (16 MiB).
    return 16 << 20 if limit is None else max(64 * KiB, 2 * limit + 64)


def _drain(decoder: Any, into: bytearray | None) -> None:
    """Take every ready frame; only typed errors may come out, and non-fatal ones only
    while the decoder is usable."""
    while True:
        try:
            if into is None:
                got = decoder.next_frame()
            else:
                try:
                    got = decoder.next_frame_into(into)
                finally:
                    decoder.release_buffer()
        except BufferTooSmallError:
            if decoder.broken:
                raise
            into = None  # v1 keeps the frame queued: take it with next_frame, as recv() would
            continue
        except (ChecksumError, ProtocolError):
            if decoder.broken:
                raise
            continue
        if got is None:
            return


def _assert_stays_broken(decoder: Any) -> None:
    for call in (decoder.next_frame, decoder.get_buffer, lambda: decoder.feed_data(b"x")):
        with pytest.raises(NpipesError):
            call()
    assert decoder.broken


@pytest.mark.parametrize(("framing", "message_mode"), DECODERS, ids=IDS)
@SETTINGS
@given(
    data=STREAMS,
    cuts=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=20),
    limit=LIMITS,
    via_buffer=st.lists(st.booleans(), min_size=1, max_size=8),
    ends=st.lists(st.booleans(), min_size=1, max_size=8),
    into=st.one_of(st.none(), st.integers(min_value=0, max_value=300)),
    require_crc=st.booleans(),
)
def test_random_bytes_give_messages_or_typed_errors(
    framing: str,
    message_mode: bool,
    data: bytes,
    cuts: list[int],
    limit: int | None,
    via_buffer: list[bool],
    ends: list[bool],
    into: int | None,
    require_crc: bool,
) -> None:
    decoder = _make(framing, message_mode, limit, require_crc)
    target = None if into is None else bytearray(into)
    pos = step = 0
    try:
        while pos < len(data):
            chunk = data[pos : pos + cuts[step % len(cuts)]]
            if via_buffer[step % len(via_buffer)]:
                with decoder.get_buffer() as buffer:
                    assert 0 < len(buffer) <= _room_bound(limit)
                    size = min(len(buffer), len(chunk))
                    buffer[:size] = chunk[:size]
                decoder.buffer_updated(size)
            else:
                size = len(chunk)
                decoder.feed_data(chunk)
            pos += size
            if message_mode or ends[step % len(ends)]:
                decoder.message_end()
            step += 1
            _drain(decoder, target)
        decoder.feed_eof()
        for _ in range(3):  # at EOF every call returns a frame or raises; none waits
            _drain(decoder, target)
    except NpipesError:
        if decoder.broken:
            _assert_stays_broken(decoder)
    except Exception as exc:  # noqa: BLE001 - the property: nothing else comes out
        pytest.fail(f"{type(exc).__name__} from the {framing} decoder: {exc}")


def _messages(framing: str) -> st.SearchStrategy[Any]:
    if framing == "lines":
        return st.text(max_size=200).filter(lambda t: "\n" not in t and "\r" not in t)
    if framing == "npipes1":
        return st.text(alphabet=st.characters(max_codepoint=127), max_size=200)
    if framing == "dotnet":
        return st.text(max_size=200).map(lambda t: t.encode("utf-16-le", "surrogatepass"))
    return st.binary(max_size=3000)


@pytest.mark.parametrize(("framing", "message_mode"), DECODERS, ids=IDS)
@SETTINGS
@given(data=st.data())
def test_valid_streams_decode_whatever_the_cuts(
    framing: str, message_mode: bool, data: st.DataObject
) -> None:
    if framing == "dotnet":  # UTF-16 of arbitrary text may be invalid: build valid text
        items = data.draw(st.lists(st.text(max_size=100), max_size=8))
    else:
        items = data.draw(st.lists(_messages(framing), max_size=8))
    if framing == "raw" or message_mode:
        items = [m for m in items if m]  # an empty read is the end of the stream
    codec = get_codec(framing)
    limit = data.draw(st.sampled_from([None, 4000]))
    # The decoder first: a multiprocessing codec learns the transport's mode from it.
    decoder = codec.decoder(max_message_size=limit, require_crc=False, message_mode=message_mode)
    wires = [
        b"".join(bytes(memoryview(p)) for p in codec.encode(m, crc=False, max_size=None))
        for m in items
    ]
    if framing == "raw" and not message_mode:
        wires = wires  # each message is one read: never cut it, never join two
    elif not message_mode:
        wires = [b"".join(wires)]
    cut_raw = framing != "raw" or message_mode
    got = []
    for wire in wires:
        pos = 0
        while pos < len(wire):
            cut = data.draw(st.integers(min_value=1, max_value=700)) if cut_raw else len(wire)
            chunk = wire[pos : pos + cut]
            if data.draw(st.booleans()):
                with decoder.get_buffer() as buffer:
                    size = min(len(buffer), len(chunk))
                    buffer[:size] = chunk[:size]
                decoder.buffer_updated(size)
            else:
                size = len(chunk)
                decoder.feed_data(chunk)
            pos += size
            if (message_mode or framing == "raw") and pos == len(wire):
                decoder.message_end()
            got.extend(frame.message for frame in iter(decoder.next_frame, None))
    expected = [m.encode() if framing == "raw" and isinstance(m, str) else m for m in items]
    assert got == expected
    assert decoder.idle


@SETTINGS
@given(
    items=st.lists(st.tuples(st.binary(max_size=70_000), st.booleans()), min_size=1, max_size=4),
    ops=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=40_000),
            st.sampled_from(["frame", "into", "into-small"]),
        ),
        min_size=1,
        max_size=40,
    ),
)
def test_v1_mixed_entry_points_with_borrowed_buffers(
    items: list[tuple[bytes, bool]], ops: list[tuple[int, str]]
) -> None:
    # next_frame and next_frame_into (borrowed buffers, released after every call) in any
    # order: each message comes out whole, in order, or release_buffer reports that a
    # borrowed buffer held half of one (then the decoder is broken and says so).
    wire = b"".join(encode_frame(m, crc=c) for m, c in items)
    decoder = FrameDecoder()
    got: list[bytes] = []
    pos = 0
    for i in range(200):
        cut, how = ops[i % len(ops)]
        if pos < len(wire):
            decoder.feed_data(wire[pos : pos + cut])
            pos += cut
        elif len(got) == len(items):
            break
        if how == "frame":
            frame = decoder.next_frame()
            if frame is not None:
                got.append(bytes(frame.message))  # type: ignore[arg-type]
            continue
        size = len(items[len(got)][0]) if len(got) < len(items) else 0
        buffer = bytearray(size if how == "into" else max(0, size - 1))
        try:
            result = decoder.next_frame_into(buffer)
        except BufferTooSmallError:
            assert how == "into-small"
            assert not decoder.release_buffer()
            continue
        if decoder.release_buffer():
            assert result is None
            _assert_stays_broken(decoder)
            return
        if result is not None:
            got.append(bytes(buffer[: result[0]]))
    decoder.feed_data(wire[pos:])
    got.extend(bytes(f.message) for f in iter(decoder.next_frame, None))  # type: ignore[arg-type]
    assert got == [m for m, _ in items]
