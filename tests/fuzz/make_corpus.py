"""Write the seed corpus: ``python tests/fuzz/make_corpus.py`` (rewrites corpus/*/seed-*).

Each seed is a harness program (see ``harnesses.py``): the valid and invalid
v1 frames of ``tests/data/vectors.json``, every framing's own encoding of a
few messages, and hand-made edge cases (huge announced lengths, splits at
every awkward place, end of stream mid-frame). Files found by fuzzing
(``crash-*``, ``found-*``) are kept.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
VECTORS = HERE.parent / "data" / "vectors.json"

# Decoder harness operations (op byte % 12) and their arguments.
RAW, MSG, FEED, READ, END, NEXT, INTO, EOF, LIMIT, BIG = 0, 1, 2, 3, 5, 6, 8, 9, 10, 12
CRC_REQUIRED, LIMIT_64K, LIMIT_256 = 0x80, 0, 200


def raw(data: bytes) -> bytes:
    out = b""
    for i in range(0, len(data), 255):
        chunk = data[i : i + 255]
        out += bytes([RAW, len(chunk)]) + chunk
    return out


def msg(payload: bytes, *, text: bool = False, crc: bool = False) -> bytes:
    size = len(payload)
    return bytes([MSG, size & 0xFF, size >> 8, int(text)]) + payload + bytes([int(crc)])


def big(size: int, pattern: bytes, *, crc: bool = False, op: int = BIG) -> bytes:
    """A large message: ``pattern`` repeated to ``size`` bytes (the harness builds it)."""
    return bytes([op]) + struct.pack("<HB", size, len(pattern) - 1) + pattern + bytes([int(crc)])


def read(n: int) -> bytes:
    return bytes([READ]) + struct.pack("<H", n)


def feed(n: int) -> bytes:
    return bytes([FEED]) + struct.pack("<H", n)


def into(n: int, *reads: int) -> bytes:
    """One recv_into call with a ``n``-byte buffer, reading ``reads`` while it waits."""
    out = bytes([INTO]) + struct.pack("<HB", n, len(reads))
    return out + b"".join(struct.pack("<H", r) for r in reads)


DRAIN = bytes([NEXT, 7])


def decoder_seeds(name: str) -> dict[str, bytes]:
    head = bytes([0, LIMIT_64K])
    seeds = {
        "messages": head + msg(b"hello") + msg(b"") + msg(b"x" * 300, crc=True) + read(9) + DRAIN,
        "text-split": head + msg(b"caf\xe9", text=True) + read(1) + read(2) + DRAIN + feed(500),
        "into": head + msg(b"abcdef" * 40) + read(1000) + into(10) + into(300) + DRAIN,
        "eof-mid": head + msg(b"0123456789") + read(7) + bytes([EOF]) + DRAIN,
        "limit-toggle": head + bytes([LIMIT]) + msg(b"y" * 400) + feed(1000) + DRAIN,
        "crc-required": bytes([CRC_REQUIRED, LIMIT_256]) + msg(b"z", crc=True) + msg(b"q"),
        "large": head + big(40_000, b"ab") + read(65535) + read(65535) + DRAIN,
        "large-into": head
        + big(50_000, b"xyz", crc=True)
        + read(100)
        + into(45_000)
        + read(65535)
        + into(60_000, 30_000, 30_000)
        + DRAIN,
        "large-over-limit": bytes([0, LIMIT_256]) + big(9_000, b"q") + feed(65535) + DRAIN,
        "message-ends": head
        + raw(b"one")
        + read(3)
        + bytes([END])
        + raw(b"two")
        + feed(3)
        + bytes([END, NEXT, 3]),
    }
    if name == "frame_v1":
        vectors = json.loads(VECTORS.read_text())
        for kind in ("valid", "invalid"):
            for vector in vectors[kind]:
                frame = bytes.fromhex(vector["frame_hex"])
                seeds[f"vector-{vector['name']}"] = head + raw(frame) + read(len(frame)) + DRAIN
        seeds["two-frames-bytewise"] = (
            head + raw(bytes.fromhex(vectors["valid"][0]["frame_hex"]) * 2) + read(1) * 40 + DRAIN
        )
        header = struct.pack("<2sBBIQ", b"NP", 1, 1, 0, 40_000)  # a large frame, read in place
        seeds["full-buffer"] = (
            head + big(65_000, b"a") + big(1000, b"b") + read(65535) + read(1) + read(9) + DRAIN
        )
        seeds["large-partial"] = head + raw(header + b"\x01" * 200) + read(100) + read(116) + DRAIN
    elif name.startswith("multiprocessing"):
        seeds["huge-long"] = head + raw(struct.pack("!iQ", -1, 1 << 62)) + feed(12) + DRAIN
        seeds["negative"] = head + raw(struct.pack("!i", -5)) + read(4) + DRAIN
        seeds["over-limit"] = head + raw(struct.pack("!i", 70_000) + b"a" * 50) + read(54) + DRAIN
    elif name == "npipes1":
        seeds["mismatch"] = head + raw(struct.pack(">II", 20, 3) + b"abc\0\0\0\0") + read(15)
        seeds["bad-crc"] = head + raw(struct.pack(">II", 11, 3) + b"abc\0\0\0\1") + read(15) + DRAIN
        seeds["huge"] = head + raw(struct.pack(">II", 0xFFFFFFFF, 0xFFFFFFF7)) + read(8) + DRAIN
    elif name.startswith("raw"):
        seeds["over-limit"] = bytes([0, 230]) + raw(b"r" * 100) + read(100) + bytes([END]) + DRAIN
    elif name == "lines":
        seeds["crlf"] = head + raw(b"a\r\nb\n\xff\xfe\nlast") + read(20) + DRAIN + bytes([EOF])
        seeds["long-line"] = bytes([0, 230]) + raw(b"L" * 200) + read(200) + DRAIN
    elif name == "dotnet":
        seeds["max-len"] = head + raw(b"\xff\xff" + b"\0" * 100) + read(102) + DRAIN
        seeds["odd"] = head + raw(b"\x00\x03abc") + read(5) + DRAIN
    return seeds


# Connection core operations (op byte % 16).
C_RAW, C_MSG, C_READ, C_DATA, C_NEXT, C_INTO, C_TAKE, C_DECODE, C_READY, C_EOF = range(10)
C_HANDSHAKE, C_STEP, C_FAILED, C_ENCODE, C_BIG, C_BATCH = 10, 11, 12, 13, 14, 15
C_PATTERN, C_PROACTOR = 16, 17


def core_msg(payload: bytes, crc: bool = False) -> bytes:
    size = len(payload)
    return bytes([C_MSG, size & 0xFF, size >> 8]) + payload + bytes([int(crc)])


def core_read(n: int, message_end: bool = True) -> bytes:
    return bytes([C_READ, 0]) + struct.pack("<H", n) + bytes([int(message_end)])


def core_seeds() -> dict[str, bytes]:
    seeds: dict[str, bytes] = {}
    body = (
        core_msg(b"first")
        + core_msg(b"second" * 30, crc=True)
        + core_read(40)
        + bytes([C_NEXT, 0, C_DECODE, C_TAKE, 0, 4])
        + core_read(4000)
        + bytes([C_INTO, 0x10, 0x00, 0, 1, 0, C_READY, C_EOF, C_NEXT, 0, C_NEXT, 0])
    )
    for index in range(8):  # every codec, crc on and off
        seeds[f"codec{index}-basic"] = bytes([index, 0, 0]) + body
        seeds[f"codec{index}-crc"] = bytes([index, 1, 0]) + body
    handshake = bytes([C_HANDSHAKE, 1]) + core_msg(b"{sha256}" + b"\0" * 32) + core_read(60)
    seeds["handshake-accept"] = bytes([0, 2, 0]) + handshake + bytes([C_STEP, C_NEXT, 0])
    seeds["handshake-connect"] = (
        bytes([1, 2, 0, C_HANDSHAKE, 0])
        + core_msg(b"#CHALLENGE#{sha256}" + b"\1" * 40)
        + core_read(200)
        + bytes([C_STEP])
    )
    seeds["handshake-oversized"] = bytes([0, 2, 0]) + core_msg(b"H" * 600) + core_read(700)
    large = big(40_000, b"L", crc=True, op=C_BIG)
    direct = bytes([C_INTO, 0xFF, 0xFF, 0, 1, 3]) + struct.pack("<HHH", 20_000, 20_000, 100)
    seeds["large-direct"] = bytes([0, 1, 0]) + large + core_read(1000) + direct
    seeds["large-queued"] = (
        bytes([2, 0, 0]) + large + core_read(65535) + bytes([C_DECODE, C_NEXT, 0])
    )
    for pick, name in enumerate(["timeout", "timeout-partial", "peer-left", "too-large", "ctrl-c"]):
        seeds[f"send-failed-{name}"] = (
            bytes([0, 0, 0])
            + core_msg(b"queued")
            + core_read(100)
            + bytes([C_DECODE, C_BATCH, 2, 3])
            + b"abc"
            + bytes([2])
            + b"de"
            + bytes([0, pick, 1, C_NEXT, 0, C_NEXT, 0])
        )
    empty_frame = struct.pack("<2sBBIQ", b"NP", 1, 0, 0, 0)
    pattern = bytes([C_PATTERN]) + struct.pack("<HB", 65535, 15) + empty_frame
    seeds["budget-proactor"] = (
        bytes([0, 0, 0])
        + pattern * 2
        + bytes([C_PROACTOR, 0xFF, 0xFF, C_TAKE, 0, 7, C_PROACTOR, 0xFF, 0xFF])
        + bytes([C_TAKE, 0, 7]) * 4
        + bytes([C_PROACTOR, 0xFF, 0xFF])
    )
    seeds["recv-failed-mid"] = bytes([0, 0, 0]) + core_msg(b"p" * 90) + bytes([C_FAILED, 50])
    seeds["send-then-eof"] = bytes([3, 0, 0, C_ENCODE, 3]) + b"abc" + bytes([0, C_EOF, C_NEXT, 0])
    return seeds


def speedups_seeds() -> dict[str, bytes]:
    """Programs of the differential harness (harnesses._speedups_harness): setup byte
    (bit 0 require_crc, the rest picks max_size), then ops 0 raw, 1 frame (right CRC),
    2 frame (any flags, CRC from the input), 3 header with any length, 4 payload to encode,
    5 end; then ranges and limits."""

    def frame(op: int, flags: int, payload: bytes, trailer: bytes = b"") -> bytes:
        return bytes([op, flags, len(payload)]) + payload + trailer

    def encode(payload: bytes, surrogates: bool) -> bytes:
        return bytes([4]) + struct.pack("<H", len(payload)) + payload + bytes([surrogates])

    ranges = bytes([5, 3, 0, 0, 1, 2, 16, 0, 0, 5, 0, 0, 0, 40, 0, 2])
    utf8 = "héllo \U0001f600".encode()
    return {
        "valid": bytes([0])
        + frame(1, 0, b"abc")
        + frame(1, 1, b"crc")
        + frame(1, 2, utf8)
        + frame(1, 3, utf8)
        + ranges,
        "require-crc": bytes([1]) + frame(1, 1, b"x" * 64) + frame(1, 0, b"y") + ranges,
        "bad": bytes([2])
        + frame(2, 1, b"bad crc", b"\0\0\0\0")
        + frame(2, 2, b"\xff\xfe")
        + frame(2, 0x84, b"flags")
        + ranges,
        "huge-length": bytes([4]) + bytes([3, 1]) + b"\xff" * 8 + frame(1, 0, b"a") + ranges,
        "raw": bytes([6, 0, 20]) + b"NP\x01\x00" + b"\x00" * 16 + ranges,
        "encode": bytes([8])
        + encode(b"abc", False)
        + encode(b"a\xed\xa0\x80", True)
        + encode("é".encode() * 40, False)
        + bytes([5, 0]),
    }


def main() -> None:
    names = [
        "frame_v1",
        "multiprocessing_stream",
        "multiprocessing_message",
        "npipes1",
        "raw_stream",
        "raw_message",
        "lines",
        "dotnet",
    ]
    all_seeds = {name: decoder_seeds(name) for name in names}
    all_seeds["core"] = core_seeds()
    all_seeds["speedups"] = speedups_seeds()
    for name, seeds in all_seeds.items():
        directory = CORPUS / name
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("seed-*"):
            old.unlink()
        for seed_name, data in seeds.items():
            (directory / f"seed-{seed_name}").write_bytes(data)


if __name__ == "__main__":
    main()
