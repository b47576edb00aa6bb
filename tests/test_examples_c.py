"""The C examples (examples/c), written only from docs/protocol.md, against npipes.

On Linux/macOS the programs are built with ``cc`` into a temporary folder (zlib's
crc32() when zlib is there, the built-in CRC-32 table otherwise), and
``test_cross_compile_for_windows`` also builds the Windows ``.exe`` files with
mingw-w64 into ``build/examples-c-win`` (the same as ``make -C examples/c windows``).
Under Windows (and Wine) the tests run those ``.exe`` files: the Linux run of the
suite comes first in CI. Without them, or when they were built from other
sources, the Windows tests skip and say how to build them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import npipes
from npipes.pipes import Pipes

IS_WINDOWS = sys.platform == "win32"
ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "examples" / "c"
WINDIR = ROOT / "build" / "examples-c-win"
# Sorted, as in the Makefile: sources.sha256 lists them in this order.
SOURCES = ("npclient.c", "npframe.c", "npframe.h", "npio.c", "npio.h", "npserver.c", "npvectors.c")
VECTORS = json.loads((Path(__file__).parent / "data" / "vectors.json").read_text("utf-8"))
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-pedantic"]
MINGW_CC = "x86_64-w64-mingw32-gcc"
WAIT = 30.0  # every subprocess and every npipes call is bounded by this
MiB = 1024 * 1024


def pattern(size: int) -> bytes:
    """What ``npclient --binary-size N`` sends: byte i is i % 251."""
    return (bytes(range(251)) * (size // 251 + 1))[:size]


def sources_digest() -> str:
    """The examples' sources in ``sha256sum`` format, as the Makefile writes them."""
    return "".join(
        f"{hashlib.sha256((SRC / name).read_bytes()).hexdigest()}  {name}\n" for name in SOURCES
    )


def compile_c(cmd: list[str]) -> None:
    result = subprocess.run(cmd, cwd=SRC, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}{result.stderr}"


def has_zlib(cc: str, tmp: Path) -> bool:
    probe = tmp / "zlib_probe.c"
    probe.write_text("#include <zlib.h>\nint main(void) { return (int)crc32(0, 0, 0); }\n")
    cmd = [cc, str(probe), "-o", str(tmp / "zlib_probe"), "-lz"]
    return subprocess.run(cmd, capture_output=True, timeout=60, check=False).returncode == 0


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """npclient, npserver and npvectors for this platform."""
    if IS_WINDOWS:
        exes = {name: WINDIR / f"{name}.exe" for name in ("npclient", "npserver", "npvectors")}
        how = "build them first with: make -C examples/c windows (needs mingw-w64)"
        if not all(path.is_file() for path in exes.values()):
            pytest.skip(f"the Windows C examples are not built in {WINDIR}; {how}")
        stamp = WINDIR / "sources.sha256"
        if not stamp.is_file() or stamp.read_text() != sources_digest():
            pytest.skip(f"the .exe files in {WINDIR} are from other sources; {how}")
        return exes
    cc = next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if cc is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH")
    out = tmp_path_factory.mktemp("examples-c")
    zlib = has_zlib(cc, out)
    crc_flags, libs = (["-DNP_HAVE_ZLIB"], ["-lz"]) if zlib else ([], [])
    for name in ("npclient", "npserver"):
        files = [f"{name}.c", "npframe.c", "npio.c"]
        compile_c([cc, *CFLAGS, *crc_flags, "-o", str(out / name), *files, *libs])
    # npframe.c with its built-in table; with zlib at hand, npvectors compares the two.
    check = ["-DNP_CHECK_ZLIB"] if zlib else []
    files = ["npvectors.c", "npframe.c"]
    compile_c([cc, *CFLAGS, *check, "-o", str(out / "npvectors"), *files, *libs])
    return {name: out / name for name in ("npclient", "npserver", "npvectors")}


def run(cmd: list[str | Path]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cmd, capture_output=True, timeout=WAIT, check=False)


@pytest.fixture
def address(pipe_name: str) -> Iterator[str]:
    """An address both npipes and the C programs take: an absolute socket path on POSIX
    (short: sun_path holds 107 bytes), the bare pipe name on Windows."""
    if IS_WINDOWS:
        yield pipe_name
        return
    folder = tempfile.mkdtemp(prefix="npc-")
    try:
        yield os.path.join(folder, "s.sock")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def c_server(npserver: Path, address: str, *options: str) -> Iterator[subprocess.Popen[bytes]]:
    """npserver running on address, once it has printed ``ready``; killed if still alive."""
    proc = subprocess.Popen(
        [npserver, *options, address],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        stdout = proc.stdout
        assert stdout is not None
        lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        try:
            first = lines.get(timeout=WAIT)
        except queue.Empty:
            pytest.fail(f"npserver did not print 'ready' within {WAIT} s")
        assert first.strip() == b"ready", (first, proc.poll())
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=WAIT)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


@contextlib.contextmanager
def echo_server(address: str, *, crc: bool) -> Iterator[tuple[str, list[str | bytes]]]:
    """An npipes listener that echoes every message of one client, in a thread;
    yields its OS address and the list of messages it received."""
    received: list[str | bytes] = []
    errors: list[BaseException] = []
    with npipes.listen(address, crc=crc) as listener:

        def serve() -> None:
            try:
                with listener.accept(timeout=WAIT) as conn:
                    for message in conn:
                        received.append(message)
                        conn.send(message, timeout=WAIT)
            except Exception as exc:  # noqa: BLE001 - reported by the test thread below
                errors.append(exc)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield listener.address, received
        finally:
            thread.join(WAIT)
    assert not thread.is_alive(), "the npipes echo server hung"
    if errors:
        raise errors[0]


# ---- the frame code alone, against docs/protocol.md section 8 -------------------------


def test_crc32_known_values_and_zlib(programs: dict[str, Path]) -> None:
    result = run([programs["npvectors"], "crc"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(b"crc ok")


def test_encoder_matches_every_valid_vector(programs: dict[str, Path]) -> None:
    args: list[str | Path] = [programs["npvectors"], "encode"]
    for vector in VECTORS["valid"]:
        message = vector["message"]
        if "text" in message:
            args += ["text", message["text"].encode("utf-8").hex()]
        else:
            args += ["binary", message["hex"]]
        args.append("crc" if vector["crc"] else "nocrc")
    result = run(args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split() == [v["frame_hex"] for v in VECTORS["valid"]]


def decode(programs: dict[str, Path], *streams: str, options: tuple[str, ...] = ()) -> list[str]:
    result = run([programs["npvectors"], "decode", *options, *streams])
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().splitlines()


def expected_message(vector: dict[str, object]) -> str:
    message = vector["message"]
    assert isinstance(message, dict)
    if "text" in message:
        return "text " + message["text"].encode("utf-8").hex()
    return "binary " + message["hex"]


def test_decoder_accepts_every_valid_vector(programs: dict[str, Path]) -> None:
    valid = VECTORS["valid"]
    one_stream = "".join(v["frame_hex"] for v in valid)
    lines = decode(programs, *(v["frame_hex"] for v in valid), one_stream)
    for vector, line in zip(valid, lines, strict=False):
        assert line == f"{expected_message(vector)}; closed", vector["name"]
    # all of them back to back in one stream, read in 1-3 byte pieces
    assert lines[-1] == "; ".join([*(expected_message(v) for v in valid), "closed"])


def test_decoder_rejects_every_invalid_vector(programs: dict[str, Path]) -> None:
    invalid = VECTORS["invalid"]
    hello = VECTORS["valid"][0]  # 'Hello', TEXT|CRC
    streams = [v["frame_hex"] for v in invalid]
    # a non-fatal error consumes exactly its frame: the next one arrives intact
    streams += [v["frame_hex"] + hello["frame_hex"] for v in invalid if not v["fatal"]]
    lines = decode(programs, *streams)
    for vector, line in zip(invalid, lines, strict=False):
        if vector["fatal"]:
            assert line == f"{vector['error']} fatal", vector["name"]
        else:
            assert line == f"{vector['error']} nonfatal; closed", vector["name"]
    followed = [v for v in invalid if not v["fatal"]]
    for vector, line in zip(followed, lines[len(invalid) :], strict=True):
        assert line == f"{vector['error']} nonfatal; text 48656c6c6f; closed", vector["name"]


def test_decoder_settings(programs: dict[str, Path]) -> None:
    v3 = VECTORS["valid"][2]["frame_hex"]  # b'Hello' without CRC
    v1 = VECTORS["valid"][0]["frame_hex"]  # 'Hello' with CRC
    assert decode(programs, v3 + v1, options=("--crc",)) == [
        "ChecksumError nonfatal; text 48656c6c6f; closed"
    ]
    # a length of exactly max_message_size is accepted; one more is not
    assert decode(programs, v3, options=("--max-size", "5")) == ["binary 48656c6c6f; closed"]
    assert decode(programs, v3, options=("--max-size", "4")) == ["MessageTooLargeError fatal"]
    # validation order: a bad header field wins over a length above the limit (2**40 here)
    big = "0000000000010000"
    for head in ("4e51010000000000", "4e50020000000000", "4e50018000000000", "4e50010001000000"):
        assert decode(programs, head + big) == ["ProtocolError fatal"], head


# ---- the programs against npipes, over real sockets / named pipes ---------------------

TEXTS = ["Hello", "", "héllo €", "日本語 🚀"]


@pytest.mark.parametrize("crc", [True, False], ids=["crc", "nocrc"])
def test_c_client_to_npipes_server(programs: dict[str, Path], pipe_name: str, crc: bool) -> None:
    # A bare name: the C client finds it where docs/protocol.md section 6 says it is.
    options = [] if crc else ["--no-crc"]
    with echo_server(pipe_name, crc=crc) as (_, received):
        result = run([programs["npclient"], *options, pipe_name, *TEXTS])
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode("utf-8").split("\n") == [*TEXTS, ""]
    assert received == TEXTS  # str: each arrived as a TEXT frame


@pytest.mark.parametrize("size", [0, MiB, 16 * MiB], ids=["empty", "1MiB", "16MiB"])
def test_c_client_binary_to_npipes_server(
    programs: dict[str, Path], pipe_name: str, size: int
) -> None:
    with echo_server(pipe_name, crc=True) as (os_address, received):
        result = run([programs["npclient"], "--binary-size", str(size), os_address])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [b"ok:", str(size).encode(), b"bytes"]
    assert len(received) == 1
    assert type(received[0]) is bytes
    assert received[0] == pattern(size)


@pytest.mark.parametrize("crc", [True, False], ids=["crc", "nocrc"])
def test_npipes_client_to_c_server(programs: dict[str, Path], address: str, crc: bool) -> None:
    messages: list[str | bytes] = [
        "Hello",
        b"Hello",
        "",
        b"",
        "héllo €",
        b"\x00\x01\xff",
        bytes(range(256)) * (MiB // 256),
        "é" * (MiB // 2),
        pattern(16 * MiB),
    ]
    with c_server(programs["npserver"], address) as proc:
        if not IS_WINDOWS:
            assert stat.S_IMODE(os.stat(address).st_mode) == 0o600
        with npipes.connect(address, crc=crc, timeout=WAIT) as conn:
            for message in messages:
                conn.send(message, timeout=WAIT)
                echo = conn.recv(timeout=WAIT)
                assert type(echo) is type(message)
                assert echo == message
        _, err = proc.communicate(timeout=WAIT)
        assert proc.returncode == 0, err
    if not IS_WINDOWS:
        assert not os.path.exists(address), "npserver left its socket file behind"


def test_c_server_stops_on_a_bad_crc(programs: dict[str, Path], address: str) -> None:
    bad_crc = next(v for v in VECTORS["invalid"] if v["name"] == "bad_crc")
    with c_server(programs["npserver"], address) as proc:
        raw = Pipes(address, timeout=WAIT)
        try:
            good = bytes.fromhex(VECTORS["valid"][0]["frame_hex"])
            raw.write(good)  # a good frame first: echoed
            echo = b""
            while len(echo) < len(good):
                echo += raw.read(len(good) - len(echo))
            assert echo == good
            raw.write(bytes.fromhex(bad_crc["frame_hex"]))
            _, err = proc.communicate(timeout=WAIT)
        finally:
            raw.close()
    assert proc.returncode == 1
    assert b"ChecksumError" in err
    if not IS_WINDOWS:
        assert not os.path.exists(address)


def test_c_server_requires_a_crc_with_crc_option(programs: dict[str, Path], address: str) -> None:
    with (
        c_server(programs["npserver"], address, "--crc") as proc,
        npipes.connect(address, crc=False, timeout=WAIT) as conn,
    ):
        conn.send("no CRC here", timeout=WAIT)
        _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 1
    assert b"ChecksumError" in err


@pytest.mark.posix
def test_cross_compile_for_windows() -> None:
    """Builds the .exe files that the Windows run of this file uses (like `make windows`)."""
    if shutil.which(MINGW_CC) is None:
        pytest.skip(f"{MINGW_CC} not found (Debian: apt-get install gcc-mingw-w64-x86-64)")
    WINDIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WINDIR) as tmp:
        built = Path(tmp)
        for name, files, libs in [
            ("npclient", ["npclient.c", "npframe.c", "npio.c"], ["-lshell32"]),
            ("npserver", ["npserver.c", "npframe.c", "npio.c"], ["-lshell32"]),
            ("npvectors", ["npvectors.c", "npframe.c"], []),
        ]:
            exe = built / f"{name}.exe"
            compile_c([MINGW_CC, *CFLAGS, "-static", "-o", str(exe), *files, *libs])
            assert exe.read_bytes()[:2] == b"MZ"
        stamp = WINDIR / "sources.sha256"
        stamp.unlink(missing_ok=True)  # it vouches for the .exe files: gone while they change
        for name in ("npclient", "npserver", "npvectors"):
            os.replace(built / f"{name}.exe", WINDIR / f"{name}.exe")
        stamp.write_text(sources_digest())
