"""The v1 codec byte for byte: golden vectors (as in docs/protocol.md), every receiver rule."""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path
from typing import Any

import pytest

import npipes
from npipes import _frame
from npipes._frame import FrameDecoder, encode_frame, frame_parts

DATA = Path(__file__).parent / "data" / "vectors.json"
VECTORS: dict[str, list[dict[str, Any]]] = json.loads(DATA.read_text("utf-8"))
PROTOCOL_MD = Path(__file__).parent.parent / "docs" / "protocol.md"


def _message(vector: dict[str, Any]) -> bytes | str:
    msg = vector["message"]
    return msg["text"] if "text" in msg else bytes.fromhex(msg["hex"])


def _decode_all(data: bytes, **options: Any) -> list[bytes | str]:
    decoder = FrameDecoder(**options)
    decoder.feed_data(data)
    return [frame.message for frame in decoder]


def test_issue_vectors_verbatim() -> None:
    hello = "4e 50 01 03 00 00 00 00 05 00 00 00 00 00 00 00 48 65 6c 6c 6f 82 89 d1 f7"
    assert encode_frame("Hello", crc=True) == bytes.fromhex(hello)
    assert encode_frame(b"") == bytes.fromhex("4e500100") + bytes(12)


def test_at_least_six_valid_vectors_and_listed_in_protocol_md() -> None:
    assert len(VECTORS["valid"]) >= 6
    doc = re.sub(r"\s+", "", PROTOCOL_MD.read_text("utf-8")).lower()
    for vector in VECTORS["valid"] + VECTORS["invalid"]:
        assert vector["frame_hex"] in doc, f"{vector['name']} is missing from docs/protocol.md"


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda v: v["name"])
def test_valid_vector_encodes_and_decodes(vector: dict[str, Any]) -> None:
    message = _message(vector)
    frame = bytes.fromhex(vector["frame_hex"])
    assert encode_frame(message, crc=vector["crc"]) == frame
    # Two copies back to back, fed one byte at a time: both come out, typed.
    decoder = FrameDecoder()
    out = []
    for byte in frame + frame:
        decoder.feed_data(bytes([byte]))
        out.extend(f.message for f in decoder)
    assert out == [message, message]
    assert all(type(m) is type(message) for m in out)


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_vector_raises_typed_error(vector: dict[str, Any]) -> None:
    error = getattr(npipes, vector["error"])
    decoder = FrameDecoder()
    decoder.feed_data(bytes.fromhex(vector["frame_hex"]))
    if vector["error"] == "IncompleteMessageError":
        assert decoder.next_frame() is None  # not an error until the stream ends
        decoder.feed_eof()
    with pytest.raises(error):
        decoder.next_frame()
    assert decoder.broken is vector["fatal"]
    good = encode_frame(b"next")
    if vector["fatal"]:
        with pytest.raises(npipes.ProtocolError):
            decoder.feed_data(good)
    else:
        decoder.feed_data(good)
        assert decoder.next_frame() == _frame.Frame(b"next", 4, False)


def test_oversize_rejected_from_header_before_payload() -> None:
    decoder = FrameDecoder(max_message_size=10)
    header, _, _ = frame_parts(b"x" * 11)
    decoder.feed_data(header)  # the 11 payload bytes never come
    with pytest.raises(npipes.MessageTooLargeError) as info:
        decoder.next_frame()
    assert (info.value.size, info.value.limit) == (11, 10)
    assert decoder.broken
    ok = FrameDecoder(max_message_size=10)
    ok.feed_data(encode_frame(b"x" * 10))
    assert ok.next_frame() is not None


def test_unlimited_size() -> None:
    decoder = FrameDecoder(max_message_size=None)
    decoder.feed_data(bytes.fromhex("4e500100000000000000000000010000"))
    assert decoder.next_frame() is None  # waits for 2**40 bytes, allocates nothing yet
    # Storage follows the bytes that arrive (issue 10 §4), never the announced
    # 1 TiB: the first read gets a bounded buffer and the decoder keeps going.
    assert 0 < len(decoder.get_buffer()) <= 16 << 20
    decoder.feed_data(b"x" * 1000)
    assert decoder.next_frame() is None
    assert not decoder.broken


def test_require_crc() -> None:
    decoder = FrameDecoder(require_crc=True)
    decoder.feed_data(encode_frame(b"plain") + encode_frame(b"checked", crc=True))
    with pytest.raises(npipes.ChecksumError):
        decoder.next_frame()
    frame = decoder.next_frame()
    assert frame is not None
    assert frame.message == b"checked"
    assert frame.crc


def test_present_crc_always_verified() -> None:
    data = bytearray(encode_frame(b"abc", crc=True))
    data[-1] ^= 0xFF
    decoder = FrameDecoder(require_crc=False)
    decoder.feed_data(bytes(data))
    with pytest.raises(npipes.ChecksumError):
        decoder.next_frame()


def test_clean_eof_between_frames() -> None:
    decoder = FrameDecoder()
    decoder.feed_data(encode_frame(b"last"))
    decoder.feed_eof()
    frame = decoder.next_frame()
    assert frame is not None
    assert frame.message == b"last"
    with pytest.raises(npipes.ConnectionClosedError) as info:
        decoder.next_frame()
    assert type(info.value) is npipes.ConnectionClosedError


def test_frame_parts_do_not_copy_payload() -> None:
    payload = b"y" * 100_000
    header, body, trailer = frame_parts(payload, crc=True)
    assert body is payload
    assert len(header) == 16
    assert len(trailer) == 4
    assert trailer == zlib.crc32(payload).to_bytes(4, "little")
    big = bytearray(70_000)
    _, body2, _ = frame_parts(big)
    assert isinstance(body2, memoryview)
    assert body2.obj is big


def test_frame_parts_accepts_any_buffer() -> None:
    import array

    numbers = array.array("i", [1, 2, 3])
    assert encode_frame(numbers) == encode_frame(numbers.tobytes())
    assert _decode_all(encode_frame(memoryview(b"abcdef")[2:4])) == [b"cd"]


def test_send_limit_checked_before_encoding() -> None:
    with pytest.raises(npipes.MessageTooLargeError) as info:
        frame_parts("ü" * 6, max_size=10)  # 12 UTF-8 bytes
    assert info.value.size == 12


def test_many_small_frames_in_one_read() -> None:
    stream = b"".join(encode_frame(f"m{i}", crc=i % 2 == 0) for i in range(4000))
    assert len(stream) > 64 * 1024
    decoder = FrameDecoder()
    got: list[bytes | str] = []
    view = memoryview(stream)
    while view:
        buf = decoder.get_buffer()
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        decoder.buffer_updated(n)
        view = view[n:]
        got.extend(f.message for f in decoder)
    assert got == [f"m{i}" for i in range(4000)]


def test_large_payload_read_in_place() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    stream = encode_frame(payload, crc=True) + encode_frame("after")
    decoder = FrameDecoder()
    views = set()
    pos = 0
    frames = []
    while pos < len(stream):
        buf = decoder.get_buffer()
        views.add(len(buf))
        n = min(len(buf), len(stream) - pos)
        buf[:n] = stream[pos : pos + n]
        decoder.buffer_updated(n)
        pos += n
        frames.extend(decoder)
    assert [f.message for f in frames] == [payload, "after"]
    assert type(frames[0].message) is bytes
    # After the first 64 KiB read, the rest of the payload went straight into
    # one buffer of the exact remaining size: no joins.
    assert len(payload) - (64 * 1024 - 16) in views


def test_next_frame_into_caller_buffer() -> None:
    decoder = FrameDecoder()
    decoder.feed_data(encode_frame(b"0123456789") + encode_frame("txt", crc=True))
    small = bytearray(4)
    with pytest.raises(npipes.BufferTooSmallError) as info:
        decoder.next_frame_into(small)
    assert info.value.size == 10
    buf = bytearray(16)
    assert decoder.next_frame_into(buf) == (10, False, False)
    assert buf[:10] == b"0123456789"
    assert decoder.next_frame_into(buf) == (3, True, True)
    assert buf[:3] == b"txt"
    with pytest.raises(TypeError):
        decoder.next_frame_into(b"readonly")


def test_decoder_refuses_input_after_fatal_error() -> None:
    decoder = FrameDecoder()
    decoder.feed_data(b"XX" + bytes(14))
    with pytest.raises(npipes.ProtocolError):
        decoder.next_frame()
    for call in (decoder.next_frame, decoder.get_buffer, lambda: decoder.feed_data(b"x")):
        with pytest.raises(npipes.ProtocolError):
            call()


def test_bad_arguments() -> None:
    decoder = FrameDecoder()
    with pytest.raises(ValueError, match="nbytes"):
        decoder.buffer_updated(-1)
    with pytest.raises(ValueError, match="room"):
        decoder.buffer_updated(10**9)
    with pytest.raises(ValueError, match="buffer_size"):
        FrameDecoder(buffer_size=4)


def test_bytes_needed_guides_the_transport() -> None:
    frame = encode_frame(b"z" * 100_000, crc=True)
    decoder = FrameDecoder()
    assert decoder.bytes_needed == 16
    decoder.feed_data(frame[:10])
    assert decoder.bytes_needed == 6
    decoder.feed_data(frame[10:16])
    assert decoder.next_frame() is None
    assert decoder.bytes_needed == 100_004
    buf = decoder.get_buffer()
    assert len(buf) == 100_000  # exactly the payload, read in place
    buf[:] = frame[16:100_016]
    decoder.buffer_updated(100_000)
    assert decoder.bytes_needed == 4
    decoder.feed_data(frame[100_016:])
    assert decoder.next_frame() is not None
    assert decoder.bytes_needed == 16
