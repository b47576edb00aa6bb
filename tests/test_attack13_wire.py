"""Attack (issue 13): malformed frames from a hostile peer aimed at the fast paths
(the C parser ``npipes._speedups`` and its pure twin), against a real listener in
another process, sync and aio, recv/recv_many/recv_into.

Every case runs the receiver twice, accelerated (if the module is built) and with
``NPIPES_PURE_PYTHON=1``: both must report exactly the expected outcomes, so the
fast paths can only decline, never change what a hostile stream does.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from npipes._names import resolve

pytestmark = pytest.mark.posix

PEER = str(Path(__file__).with_name("attack13_receiver.py"))
SRC = str(Path(__file__).resolve().parents[1] / "src")


def frame(
    payload: bytes,
    *,
    flags: int = 0,
    length: int | None = None,
    crc: bool = False,
    reserved: int = 0,
    version: int = 1,
    magic: bytes = b"NP",
) -> bytes:
    size = len(payload) if length is None else length
    head = struct.pack("<2sBBIQ", magic, version, flags | (1 if crc else 0), reserved, size)
    tail = struct.pack("<I", zlib.crc32(payload)) if crc else b""
    return head + payload + tail


def _accelerated() -> bool:
    try:
        from npipes import _speedups  # type: ignore[attr-defined,unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return True


MODES = ["pure", "accel"] if _accelerated() else ["pure"]


def run_receiver(
    name: str,
    opts: dict[str, Any],
    stream: bytes,
    *,
    pure: bool,
    chunk: int | None = None,
    close: bool = True,
) -> list[Any]:
    """Start the receiver, send ``stream`` as a raw client (in ``chunk``-byte writes),
    half-close, and return its outcomes (the last one is ``{"end": ...}``)."""
    env = dict(os.environ)
    env["NPIPES_PURE_PYTHON"] = "1" if pure else "0"
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, PEER, name, json.dumps(opts)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == '"READY"', proc.stderr and proc.stderr.read()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(60)
            sock.connect(resolve(name).path)
            if chunk is None:
                sock.sendall(stream)
            else:
                for i in range(0, len(stream), chunk):
                    sock.sendall(stream[i : i + chunk])
            if close:
                sock.shutdown(socket.SHUT_WR)
            out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    results = [json.loads(line) for line in out.splitlines()]
    assert results[-1]["end"][0] is (not pure), results[-1]
    return results


def both(name: str, opts: dict[str, Any], stream: bytes, **kw: Any) -> list[Any]:
    """The outcomes, identical accelerated and pure (``end`` stats aside)."""
    seen = []
    for i, mode in enumerate(MODES):
        got = run_receiver(f"{name}{i}", opts, stream, pure=mode == "pure", **kw)
        seen.append([item for item in got[:-1] if "batch" not in item])
    for other in seen[1:]:
        assert other == seen[0]
    return seen[0]


def msg(data: bytes | str) -> dict[str, Any]:
    import hashlib

    raw = data.encode("utf-8") if isinstance(data, str) else data
    return {"msg": [type(data).__name__, len(raw), hashlib.sha256(raw).hexdigest()[:16]]}


def err(kind: str, state: str) -> dict[str, Any]:
    return {"err": [kind, state]}


CLOSED = err("ConnectionClosedError", "OPEN")
GONE = err("ConnectionClosedError", "BROKEN")


def fatal(kind: str) -> list[dict[str, Any]]:
    """A fatal error, then the connection is over."""
    return [err(kind, "BROKEN"), GONE]


# (stream, expected outcomes after a first good message and with a clean EOF)
GOOD = frame(b"first")
CASES: dict[str, tuple[bytes, list[dict[str, Any]]]] = {
    "length 2**63": (GOOD + frame(b"", length=2**63), fatal("MessageTooLargeError")),
    "length 2**64-1": (GOOD + frame(b"", length=2**64 - 1), fatal("MessageTooLargeError")),
    "length overflowing start+16+len+4": (
        GOOD + frame(b"abc", length=2**64 - 17, crc=True),
        fatal("MessageTooLargeError"),
    ),
    "crc flag, trailer missing": (
        GOOD + frame(b"abcd", crc=True)[:-4],
        fatal("IncompleteMessageError"),
    ),
    "crc wrong": (
        GOOD + frame(b"abcd", crc=True)[:-1] + b"\x00" + frame(b"after"),
        [err("ChecksumError", "OPEN"), msg(b"after"), CLOSED],
    ),
    "text invalid utf-8": (
        GOOD + frame(b"\xff\xfe", flags=2) + frame(b"after"),
        [err("ProtocolError", "OPEN"), msg(b"after"), CLOSED],
    ),
    "text overlong utf-8": (
        GOOD + frame(b"\xc0\xaf", flags=2) + frame(b"after"),
        [err("ProtocolError", "OPEN"), msg(b"after"), CLOSED],
    ),
    "text surrogate": (
        GOOD + frame(b"\xed\xa0\x80", flags=2) + frame("é".encode(), flags=2),
        [err("ProtocolError", "OPEN"), msg("é"), CLOSED],
    ),
    "text with crc, invalid utf-8": (
        GOOD + frame(b"\xff", flags=2, crc=True) + frame(b"x", crc=True),
        [err("ProtocolError", "OPEN"), msg(b"x"), CLOSED],
    ),
    "unknown flag": (GOOD + frame(b"abc", flags=4), fatal("ProtocolError")),
    "flag 0x80": (GOOD + frame(b"abc", flags=0x80), fatal("ProtocolError")),
    "reserved bits": (GOOD + frame(b"abc", reserved=1 << 31), fatal("ProtocolError")),
    "version 2": (GOOD + frame(b"abc", version=2), fatal("ProtocolError")),
    "bad magic": (GOOD + frame(b"abc", magic=b"PN"), fatal("ProtocolError")),
    "truncated header": (GOOD + frame(b"abc")[:9], fatal("IncompleteMessageError")),
    "truncated payload": (GOOD + frame(b"abc")[:18], fatal("IncompleteMessageError")),
}


def _as_bytes(item: dict[str, Any]) -> dict[str, Any]:
    if "msg" in item:
        return {"msg": ["bytes", *item["msg"][1:]]}
    return item


@pytest.mark.parametrize("api", ["recv", "recv_many", "recv_into"])
@pytest.mark.parametrize("mode", ["sync", "aio"])
@pytest.mark.parametrize("case", list(CASES))
def test_malformed_frame(pipe_name: str, case: str, mode: str, api: str) -> None:
    stream, expected = CASES[case]
    got = both(pipe_name, {"mode": mode, "api": api}, stream)
    expected = [msg(b"first"), *expected]
    if api == "recv_into":
        expected = [_as_bytes(item) for item in expected]
    assert got == expected, got


@pytest.mark.parametrize("mode", ["sync", "aio"])
@pytest.mark.parametrize("case", list(CASES))
def test_malformed_frame_one_byte_writes(pipe_name: str, case: str, mode: str) -> None:
    """The same streams split at every byte boundary: the same outcomes."""
    stream, expected = CASES[case]
    got = both(pipe_name, {"mode": mode}, stream, chunk=1)
    assert got == [msg(b"first"), *expected], got


@pytest.mark.parametrize("api", ["recv", "recv_many", "recv_into"])
@pytest.mark.parametrize("mode", ["sync", "aio"])
@pytest.mark.parametrize("crc", [False, True])
def test_length_at_max_message_size(pipe_name: str, mode: str, api: str, crc: bool) -> None:
    """max_message_size=100: 99 and 100 bytes pass, 101 breaks the connection."""
    stream = frame(b"a" * 99, crc=crc) + frame(b"b" * 100, crc=crc) + frame(b"c" * 101, crc=crc)
    opts = {"mode": mode, "api": api, "max_message_size": 100}
    got = both(pipe_name, opts, stream)
    assert got == [msg(b"a" * 99), msg(b"b" * 100), err("MessageTooLargeError", "BROKEN"), GONE]


MIX_SIZES = [0, 1, 15, 16, 17, 16383, 16384, 16385, 32767, 32768, 32769, 65536, 70000, 200_000]


def _mixed_stream(seed: int) -> tuple[bytes, list[dict[str, Any]]]:
    """Valid frames of sizes around every fast-path threshold (the small-frame limit,
    the large-payload limit, the read buffer), with and without CRC, bytes and text."""
    import random

    rng = random.Random(seed)
    stream, expected = [], []
    for n in range(60):
        size = rng.choice(MIX_SIZES)
        crc = rng.random() < 0.4
        if rng.random() < 0.3:
            text = ("é" * (size // 2 + 1))[: max(size // 2, 0)] or "t"
            stream.append(frame(text.encode(), flags=2, crc=crc))
            expected.append(msg(text))
        else:
            data = bytes([n % 251]) * size
            stream.append(frame(data, crc=crc))
            expected.append(msg(data))
    return b"".join(stream), expected


@pytest.mark.parametrize("chunk", [7, 16, 20, 4096, 65536 + 3])
@pytest.mark.parametrize("api", ["recv", "recv_many", "recv_into"])
@pytest.mark.parametrize("mode", ["sync", "aio"])
def test_valid_frames_around_every_threshold(
    pipe_name: str, mode: str, api: str, chunk: int
) -> None:
    """Header-alone reads after large frames, scratch reads and the C parser together:
    every message whole and in order, whatever the write boundaries."""
    stream, expected = _mixed_stream(chunk)
    got = both(pipe_name, {"mode": mode, "api": api}, stream, chunk=chunk)
    if api == "recv_into":
        expected = [_as_bytes(item) for item in expected]
    assert got == [*expected, CLOSED]


@pytest.mark.parametrize("api", ["recv", "recv_many", "recv_into"])
@pytest.mark.parametrize("mode", ["sync", "aio"])
def test_crc_required_frames_without_it_are_refused(pipe_name: str, mode: str, api: str) -> None:
    """A crc=True receiver: the fast paths never hand out a frame without its CRC-32."""
    stream = frame(b"ok", crc=True) + frame(b"bare") + frame(b"bare2") + frame(b"ok2", crc=True)
    stream += frame(b"", crc=True) + frame(b"")
    got = both(pipe_name, {"mode": mode, "api": api, "crc": True}, stream)
    refused = err("ChecksumError", "OPEN")
    assert got == [msg(b"ok"), refused, refused, msg(b"ok2"), msg(b""), refused, CLOSED], got
