"""Review of issue 13's C accelerator: Python code run by the CRC-32 callable (it may
mutate or resize what the C code is reading) and extreme integers never crash it or
make it read freed memory; it gives the pure results or a clean exception."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

import pytest

from npipes import _frame
from npipes._crc import crc32

# Imported directly, so these run with NPIPES_PURE_PYTHON=1 too (where it is built).
speedups = pytest.importorskip("npipes._speedups", reason="the C accelerator is not built")
speedups.configure(crc32)


@pytest.fixture
def restore_crc() -> Iterator[None]:
    speedups.configure(crc32)
    yield
    speedups.configure(crc32)


def test_crc_callable_that_empties_the_list_during_encode_small_many(restore_crc: None) -> None:
    messages: list[object] = [b"a" * 100, "h\u00e9llo" * 10, b"b" * 10000] * 20
    original = list(messages)

    def evil(data: bytes) -> int:
        messages.clear()  # drops the list's references to the items being encoded
        messages.extend([b"x"] * 3)
        return zlib.crc32(data)

    speedups.configure(evil)
    joined = speedups.encode_small_many(messages, True, None)
    speedups.configure(crc32)
    # The C code walks a snapshot: the frames of the messages it was given.
    assert joined == _frame.pure_encode_small_many(original, True, None)


def test_crc_callable_cannot_resize_the_buffer_being_parsed(restore_crc: None) -> None:
    buf = bytearray(_frame.encode_frame(b"z" * 5000, crc=True) * 3)
    refused: list[type[BaseException]] = []

    def resize(data: bytes) -> int:
        try:
            buf.extend(b"0" * 100_000)  # would move the memory the C code reads
        except BufferError as exc:
            refused.append(type(exc))
        return zlib.crc32(data)

    speedups.configure(resize)
    got = speedups.parse_frames(buf, 0, len(buf), None, False, 10)
    speedups.configure(crc32)
    assert [len(m) for m in got[0]] == [5000, 5000, 5000]
    assert got[1] == len(buf)
    assert refused == [BufferError] * 3  # the buffer stays exported during the call


@pytest.mark.parametrize("result", [2**32, -1, 2**64, "x", None])
def test_a_crc_callable_returning_nonsense_raises_cleanly(
    restore_crc: None, result: object
) -> None:
    frame = bytearray(_frame.encode_frame(b"abc", crc=True))
    speedups.configure(lambda data: result)
    with pytest.raises((OverflowError, TypeError)):
        speedups.encode_small(b"abc", True, None)
    with pytest.raises((OverflowError, TypeError)):
        speedups.parse_frame(frame, 0, len(frame), None, False)


@pytest.mark.parametrize("length", [2**63 - 1, 2**63, 2**64 - 1, 2**64 - 16, 2**64 - 20])
@pytest.mark.parametrize("max_size", [None, 2**63, 2**200, -(2**200), -1, 0])
def test_u64_lengths_and_big_int_limits_match_the_pure_code(
    length: int, max_size: int | None
) -> None:
    for flags in (0, 1, 3):
        buf = bytearray(struct.pack("<2sBBIQ", b"NP", 1, flags, 0, length) + b"\0" * 40)
        args = (buf, 0, len(buf), max_size, False)
        assert speedups.parse_frame(*args) is None
        assert speedups.parse_frame(*args) == _frame.pure_parse_frame(*args)
        assert speedups.parse_frames(*args, 5) == _frame.pure_parse_frames(*args, 5)
