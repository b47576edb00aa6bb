"""The accelerated CRC-32 gives exactly zlib.crc32's values."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib

from hypothesis import given
from hypothesis import strategies as st

from npipes import _crc


@given(st.binary(max_size=5000), st.integers(min_value=0, max_value=50))
def test_same_values_as_zlib(data: bytes, skip: int) -> None:
    assert _crc.crc32(data) == zlib.crc32(data)
    view = memoryview(data)[skip:]
    assert _crc.crc32(view) == zlib.crc32(view)


def test_large_and_known_values() -> None:
    assert _crc.crc32(b"123456789") == 0xCBF43926
    assert _crc.crc32(b"") == 0
    big = bytes(range(256)) * 40_000
    assert _crc.crc32(big) == zlib.crc32(big)


def test_implementation_is_reported_and_zlib_can_be_forced() -> None:
    assert _crc.IMPLEMENTATION in ("zlib-ng", "isal", "zlib")
    code = "from npipes import _crc; print(_crc.IMPLEMENTATION)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "NPIPES_CRC": "zlib"},
        check=True,
    ).stdout.strip()
    assert out == "zlib"
