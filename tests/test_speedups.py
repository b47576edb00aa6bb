"""The C accelerator (``npipes._speedups``) against its pure-Python twins in ``npipes._frame``.

Differential: on any valid-typed input (valid, truncated, corrupted frames, odd limits and
ranges) each C function returns exactly what the pure one returns: equal value, same
type, None included; bad ranges raise ValueError in both. A whole ``FrameDecoder`` fed
the same chunked stream behaves the same with either bound into ``npipes._frame``.
Also: no reference or memory leak over many calls, and ``NPIPES_PURE_PYTHON=1``.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npipes import _frame
from npipes._crc import crc32
from npipes._frame import SMALL_FRAME, FrameDecoder
from npipes.errors import NpipesError

try:
    from npipes import _speedups  # type: ignore[attr-defined,unused-ignore]
except ImportError:
    pytest.skip(
        "the C accelerator is not built (no C compiler at install time)", allow_module_level=True
    )

C: Any = _speedups
C.configure(crc32)  # as npipes._accel does (not called when NPIPES_PURE_PYTHON=1)

PURE = {
    "encode_small": _frame.pure_encode_small,
    "encode_small_many": _frame.pure_encode_small_many,
    "parse_frame": _frame.pure_parse_frame,
    "parse_frames": _frame.pure_parse_frames,
}
_HEADER = struct.Struct("<2sBBIQ")


def outcome(func: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """What a call did: its result with every type inside it, or its exception type and text."""
    try:
        result = func(*args)
    except Exception as exc:  # noqa: BLE001 - compared: the other side must raise the same
        return "raised", (type(exc), str(exc))
    return "returned", typed(result)


def typed(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return type(value), [typed(v) for v in value]
    return type(value), value


def same(name: str, *args: Any) -> None:
    c = outcome(getattr(C, name), *args)
    pure = outcome(PURE[name], *args)
    assert c == pure, (name, args)


# -- strategies -------------------------------------------------------------------------

payloads = st.one_of(
    st.binary(max_size=80),
    st.text(max_size=40),
    st.sampled_from([b"", "", b"x" * SMALL_FRAME, b"x" * (SMALL_FRAME + 1), "\U0001f600" * 4097]),
    st.sampled_from(["é" * 8192, "é" * 8193, "a" * SMALL_FRAME, "a" * (SMALL_FRAME + 1)]),
    st.sampled_from(["\ud800", "a\udfffb", "\U0010ffff"]),
)
max_sizes = st.one_of(
    st.none(),
    st.integers(min_value=0, max_value=200),
    st.sampled_from([0, 1, 15, 16, SMALL_FRAME - 1, SMALL_FRAME, SMALL_FRAME + 1]),
    st.sampled_from([2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**200]),
)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """One frame, valid or broken in one of the ways the decoder must notice."""
    data = draw(st.one_of(st.binary(max_size=60), st.text(max_size=30)))
    text = isinstance(data, str)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    flags = (2 if text else 0) | draw(st.sampled_from([0, 1]))
    magic, version, reserved, length = b"NP", 1, 0, len(payload)
    trailer = struct.pack("<I", crc32(payload)) if flags & 1 else b""
    flaw = draw(
        st.sampled_from(
            ["none"] * 6
            + ["magic", "version", "flags", "reserved", "length", "huge", "crc"]
            + ["utf8", "truncate", "flip"]
        )
    )
    if flaw == "magic":
        magic = draw(st.binary(min_size=2, max_size=2))
    elif flaw == "version":
        version = draw(st.integers(0, 255))
    elif flaw == "flags":
        flags = draw(st.integers(0, 255))
    elif flaw == "reserved":
        reserved = draw(st.integers(0, 2**32 - 1))
    elif flaw == "length":
        length = draw(st.integers(0, 100))
    elif flaw == "huge":
        length = draw(st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64 - 16, 2**64 - 20]))
    elif flaw == "crc" and trailer:
        trailer = struct.pack("<I", crc32(payload) ^ draw(st.integers(1, 2**32 - 1)))
    elif flaw == "utf8":
        flags |= 2
        payload = draw(st.sampled_from([b"\xff", b"\xc3", b"a\xed\xa0\x80", b"\xf4\x90\x80\x80"]))
        length = len(payload)
        if flags & 1:
            trailer = struct.pack("<I", crc32(payload))
    frame = _HEADER.pack(magic, version, flags, reserved, length) + payload + trailer
    if flaw == "truncate":
        frame = frame[: draw(st.integers(0, max(0, len(frame) - 1)))]
    elif flaw == "flip" and frame:
        i = draw(st.integers(0, len(frame) - 1))
        frame = frame[:i] + bytes([frame[i] ^ (1 << draw(st.integers(0, 7)))]) + frame[i + 1 :]
    return frame


streams = st.one_of(
    st.lists(frames(), max_size=6).map(b"".join),
    st.binary(max_size=100),
    st.tuples(st.binary(max_size=20), st.lists(frames(), max_size=4)).map(
        lambda t: t[0] + b"".join(t[1])
    ),
)


@st.composite
def ranges(draw: st.DrawFn, stream: bytes) -> tuple[int, int]:
    start = draw(st.integers(0, len(stream)))
    end = draw(st.one_of(st.just(len(stream)), st.integers(start, len(stream))))
    return start, end


buffer_types = st.sampled_from([bytearray, bytes, memoryview])


def as_buffer(kind: type, data: bytes) -> Any:
    return memoryview(bytearray(data)) if kind is memoryview else kind(data)


# -- differential properties --------------------------------------------------------------


@given(streams, st.data(), max_sizes, st.booleans(), buffer_types)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_parse_frame_same(
    stream: bytes, data: st.DataObject, max_size: int | None, require_crc: bool, kind: type
) -> None:
    start, end = data.draw(ranges(stream))
    buf = as_buffer(kind, stream)
    same("parse_frame", buf, start, end, max_size, require_crc)


@given(streams, st.data(), max_sizes, st.booleans(), st.integers(-2, 8))
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_parse_frames_same(
    stream: bytes, data: st.DataObject, max_size: int | None, require_crc: bool, limit: int
) -> None:
    start, end = data.draw(ranges(stream))
    buf = bytearray(stream)
    same("parse_frames", buf, start, end, max_size, require_crc, limit)
    same("parse_frames", memoryview(buf), start, end, max_size, require_crc, 2**70)


@given(st.binary(max_size=40), st.integers(-5, 50), st.integers(-5, 50))
def test_bad_ranges_raise_the_same(stream: bytes, start: int, end: int) -> None:
    buf = bytearray(stream)
    same("parse_frame", buf, start, end, None, False)
    same("parse_frames", buf, start, end, None, False, 3)


@pytest.mark.parametrize("start", [2**63, 2**64, -(2**64)])
def test_huge_range_ints_raise_value_error(start: int) -> None:
    same("parse_frame", bytearray(20), start, 2**65, None, False)
    same("parse_frames", bytearray(20), start, 2**65, None, False, 1)


@given(payloads, st.booleans(), max_sizes)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_encode_small_same(data: bytes | str, crc: bool, max_size: int | None) -> None:
    same("encode_small", data, crc, max_size)


@pytest.mark.parametrize(
    "data", [bytearray(b"ab"), memoryview(b"ab"), 7, None, ["x"], type("S", (str,), {})("ab")]
)
@pytest.mark.parametrize("crc", [False, True])
def test_encode_small_declines_other_types(data: object, crc: bool) -> None:
    same("encode_small", data, crc, None)
    same("encode_small_many", [b"ok", data], crc, None)


@given(st.lists(payloads, max_size=8), st.booleans(), max_sizes)
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_encode_small_many_same(
    messages: list[bytes | str], crc: bool, max_size: int | None
) -> None:
    same("encode_small_many", messages, crc, max_size)


@given(
    st.lists(st.one_of(st.binary(max_size=50), st.text(max_size=20)), max_size=10), st.booleans()
)
def test_encoded_frames_parse_back(messages: list[bytes | str], crc: bool) -> None:
    wire = C.encode_small_many(messages, crc, None)
    assert wire is not None
    got, end = C.parse_frames(bytearray(wire), 0, len(wire), None, crc, 100)
    assert (got, end) == (messages, len(wire))


# -- the whole decoder, with either implementation bound into npipes._frame -----------------


@contextmanager
def bound(impl: dict[str, Any]) -> Iterator[None]:
    """npipes._frame's fast paths set to ``impl`` (attribute swapping only, no I/O mocks)."""
    with pytest.MonkeyPatch.context() as mp:
        for name, func in impl.items():
            mp.setattr(_frame, name, func)
        yield


def decode(stream: bytes, cuts: list[int], max_size: int | None, require_crc: bool) -> list[Any]:
    """Every frame and error a decoder gives for ``stream`` delivered in ``cuts``-sized chunks."""
    decoder = FrameDecoder(max_message_size=max_size, require_crc=require_crc, buffer_size=64)
    events: list[Any] = []
    pos = i = 0

    def drain() -> bool:
        for _ in range(1000):
            try:
                frame = decoder.next_frame()
            except NpipesError as exc:
                events.append(("raised", type(exc), str(exc)))
                return False
            if frame is None:
                return True
            events.append(("frame", typed(tuple(frame))))
        raise AssertionError("the decoder kept giving frames")

    while pos < len(stream):
        try:
            buf = decoder.get_buffer()
        except NpipesError as exc:
            events.append(("get_buffer raised", type(exc), str(exc)))
            return events
        n = min(len(buf), cuts[i % len(cuts)], len(stream) - pos)
        buf[:n] = stream[pos : pos + n]
        decoder.buffer_updated(n)
        pos += n
        i += 1
        if not drain():
            return events
    try:
        decoder.feed_eof()
        drain()
    except NpipesError as exc:
        events.append(("eof raised", type(exc), str(exc)))
    return events


C_IMPL = {name: getattr(C, name) for name in PURE}


@given(
    st.lists(frames(), max_size=8).map(b"".join),
    st.lists(st.integers(1, 70), min_size=1, max_size=5),
    st.one_of(st.none(), st.integers(0, 80), st.just(2**64)),
    st.booleans(),
)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_decoder_same_with_either(
    stream: bytes, cuts: list[int], max_size: int | None, require_crc: bool
) -> None:
    with bound(C_IMPL):
        with_c = decode(stream, cuts, max_size, require_crc)
    with bound(PURE):
        with_pure = decode(stream, cuts, max_size, require_crc)
    assert with_c == with_pure


# -- leaks ------------------------------------------------------------------------------------


def _exercise(rounds: int) -> None:
    crc_frames = C.encode_small_many([b"x" * 64, "é" * 20, b""], True, None)
    bad_text = _HEADER.pack(b"NP", 1, 2, 0, 1) + b"\xff"
    buf = bytearray(crc_frames + bad_text)
    for _ in range(rounds):
        C.encode_small(b"y" * 64, True, 100)
        C.encode_small("z\ud800", False, None)
        C.encode_small_many([b"a", "b", b"c" * 64], False, None)
        C.encode_small_many([b"a", 3], True, None)
        C.parse_frame(buf, 0, len(buf), None, False)
        C.parse_frames(buf, 0, len(buf), 2**70, False, 10)
        C.parse_frame(buf, len(crc_frames), len(buf), None, False)
        with suppress(ValueError):
            C.parse_frame(buf, 5, 2, None, False)


def test_no_leaks_over_many_calls() -> None:
    _exercise(1000)  # warm up caches
    total = getattr(sys, "gettotalrefcount", None)
    if total is not None:  # a debug build of CPython counts every reference
        before = total()
        _exercise(100_000)
        assert total() - before < 1000
        return
    tracemalloc.start()
    try:
        _exercise(1000)
        before = tracemalloc.get_traced_memory()[0]
        _exercise(100_000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 100_000, f"{grown} bytes more after 100k rounds"


def test_crc_callable_errors_propagate() -> None:
    def broken(data: bytes) -> int:
        raise ZeroDivisionError("from crc")

    frame = C.encode_small(b"abc", True, None)
    try:
        C.configure(broken)
        with pytest.raises(ZeroDivisionError):
            C.encode_small(b"abc", True, None)
        with pytest.raises(ZeroDivisionError):
            C.parse_frames(bytearray(frame), 0, len(frame), None, False, 1)
        assert C.encode_small(b"abc", False, None) is not None  # no CRC: not called
    finally:
        C.configure(crc32)


def test_pure_python_env_var() -> None:
    code = (
        "import npipes, npipes._accel as a, npipes._frame as f;"
        " print(a.ACCELERATED, f.parse_frame is f.pure_parse_frame)"
    )
    env = {**os.environ, "NPIPES_PURE_PYTHON": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.split() == ["False", "True"]
    env["NPIPES_PURE_PYTHON"] = "0"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.split() == ["True", "False"]
