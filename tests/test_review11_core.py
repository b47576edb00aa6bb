"""Review of issue 11's core changes, without I/O: the connection core and the v1 decoder.

``FrameDecoder.get_buffer`` now parses the header at the front of a buffer full of
undecoded bytes, and leaves a header it cannot take to ``next_frame`` (which raises
in stream order). The payload storage of a large frame can fail to allocate during
that early parse (``MemoryError``, here injected into the allocator): the decoder
must then be exactly where it was, not one header further on, or the payload's
bytes are decoded as frames of their own.
"""

from __future__ import annotations

import pytest

import npipes
import npipes._frame as frame_module
from npipes._frame import READ_BUFFER_SIZE, encode_frame, frame_parts
from npipes._framings import NpipesCodec
from npipes._protocol import ConnectionCore


def _core() -> ConnectionCore:
    return ConnectionCore(
        NpipesCodec(),
        crc=False,
        max_message_size=None,
        message_mode=False,
        name=None,
        address=None,
    )


def _fill(core: ConnectionCore, data: bytes) -> None:
    """Feed ``data`` the way the asyncio driver does, without decoding."""
    view = memoryview(data)
    while view:
        buf = core.get_buffer()
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        core.buffer_updated(n)
        view = view[n:]


def _no_memory(size: int) -> tuple[bytes, memoryview]:
    raise MemoryError(f"cannot allocate {size} bytes")


@pytest.mark.parametrize("memory", ["stays short", "comes back"])
def test_payload_allocation_failing_in_an_early_header_parse_injects_no_frame(
    monkeypatch: pytest.MonkeyPatch, memory: str
) -> None:
    """A large frame's header at the front of a full read buffer; its payload begins
    with bytes that look like a frame. Allocating the payload storage fails while
    get_buffer parses that header early: the next decode raises MessageTooLargeError
    (memory still short) or returns the whole large message (memory back), and never
    the frame-looking bytes of its payload as a message of their own."""
    inner = encode_frame(b"injected")
    payload = (inner + bytes(100_000))[:100_000]
    header, _, _ = frame_parts(payload)
    whole = header + payload
    core = _core()
    _fill(core, whole[:READ_BUFFER_SIZE])  # the buffer is now full, nothing decoded
    with monkeypatch.context() as patch:
        patch.setattr(frame_module, "allocate", _no_memory)
        assert len(core.get_buffer()) > 0
        if memory == "stays short":
            with pytest.raises(npipes.MessageTooLargeError):
                core.next_message()
            return
    assert core.next_message() is None  # the large frame is waiting for its payload
    _fill(core, whole[READ_BUFFER_SIZE:])
    assert core.next_message() == payload
