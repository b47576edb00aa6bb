"""npipes against real C# programs (examples/csharp, built with Mono's mcs), issue 14 §3.

Both directions (npipes listening + a C# client, a C# server + npipes connecting),
the v1 frame with and without CRC and ``framing="dotnet"``, always through the
.NET naming (``dotnet=True``): the C# side names the pipe as any .NET program
does, and Mono puts it at ``$TMPDIR/CoreFxPipe_NAME`` like .NET on Linux.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import dotnet14_csharp as cs
import npipes
import npipes.aio
from npipes import ChecksumError, PipeInUseError
from npipes._names import resolve

pytestmark = pytest.mark.posix
WAIT = cs.WAIT
TEXTS = ["Hello", "héllo €", "😀 outside the BMP", ""]


@pytest.fixture(scope="session")
def csharp(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The four C# examples, compiled once per session with mcs."""
    reason = cs.missing_tools()
    if reason is not None:
        pytest.skip(reason)
    return cs.build(tmp_path_factory.mktemp("csharp"))


@pytest.fixture
def dotnet_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh TMPDIR for both sides (short, for sun_path), so .NET pipes of other
    tests and programs stay out of the way."""
    path = tempfile.mkdtemp(prefix="dn", dir="/tmp")
    monkeypatch.setenv("TMPDIR", path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def echo(listener: npipes.Listener) -> list[bytes | str]:
    """Accept one client, send each message back; return what arrived."""
    received: list[bytes | str] = []
    with listener.accept(timeout=WAIT) as conn:
        while True:
            try:
                message = conn.recv(timeout=WAIT)
            except npipes.ConnectionClosedError as exc:
                if type(exc) is npipes.ConnectionClosedError:
                    return received
                raise
            received.append(message)
            conn.send(message)


# -- npipes listens, a C# client connects ---------------------------------------------


@pytest.mark.parametrize("crc", [True, False], ids=["crc", "nocrc"])
def test_csharp_client_talks_v1_to_an_npipes_listener(
    csharp: dict[str, Path], dotnet_tmp: str, pipe_name: str, crc: bool
) -> None:
    """Text and binary (empty included) both ways; the type of each message is kept."""
    args = [] if crc else ["--no-crc"]
    sent = [*TEXTS, "hex:0001ff", "hex:"]
    with npipes.listen(pipe_name, dotnet=True, crc=crc) as listener:
        assert listener.address == os.path.join(dotnet_tmp, f"CoreFxPipe_{pipe_name}")
        proc = cs.start(csharp["NpipesClient"], [*args, pipe_name, *sent], cs.mono_env(dotnet_tmp))
        received = echo(listener)
    code, out, err = cs.finish(proc)
    assert (code, err) == (0, "")
    assert received == [*TEXTS, b"\x00\x01\xff", b""]
    assert out.splitlines() == sent


@pytest.mark.parametrize("crc", [True, False], ids=["crc", "nocrc"])
def test_csharp_client_sends_and_gets_back_a_mib(
    csharp: dict[str, Path], dotnet_tmp: str, pipe_name: str, crc: bool
) -> None:
    size = 1 << 20
    args = [] if crc else ["--no-crc"]
    with npipes.listen(pipe_name, dotnet=True, crc=crc) as listener:
        proc = cs.start(
            csharp["NpipesClient"],
            [*args, pipe_name, "--binary-size", str(size)],
            cs.mono_env(dotnet_tmp),
        )
        received = echo(listener)
    assert cs.finish(proc) == (0, f"ok: {size} bytes\n", "")
    assert received == [bytes(i % 251 for i in range(size))]


def test_a_bad_crc_from_csharp_is_a_checksum_error_and_the_connection_survives(
    csharp: dict[str, Path], dotnet_tmp: str, pipe_name: str
) -> None:
    with npipes.listen(pipe_name, dotnet=True, crc=True) as listener:
        proc = cs.start(
            csharp["NpipesClient"], ["--bad-crc", pipe_name, "hello"], cs.mono_env(dotnet_tmp)
        )
        with listener.accept(timeout=WAIT) as conn:
            with pytest.raises(ChecksumError, match="CRC"):
                conn.recv(timeout=WAIT)
            conn.send("refused: bad CRC")  # the frame was consumed whole: still usable
            code, out, err = cs.finish(proc)
    assert (code, out, err) == (0, "refused: bad CRC\n", "")


def test_streamstring_client_talks_to_an_npipes_dotnet_listener(
    csharp: dict[str, Path], dotnet_tmp: str, pipe_name: str
) -> None:
    """framing="dotnet": UTF-16 text, surrogate pairs, the largest message (65534 bytes)."""
    sent = [*TEXTS, "é" * 32767]
    with npipes.listen(pipe_name, dotnet=True, framing="dotnet") as listener:
        proc = cs.start(csharp["StreamStringClient"], [pipe_name, *sent], cs.mono_env(dotnet_tmp))
        received = echo(listener)
    assert cs.finish(proc) == (0, "".join(m + "\n" for m in sent), "")
    assert received == sent


# -- a C# server listens, npipes connects ----------------------------------------------


@pytest.mark.parametrize("crc", [True, False], ids=["crc", "nocrc"])
def test_npipes_talks_v1_to_a_csharp_server(
    csharp: dict[str, Path], dotnet_tmp: str, pipe_name: str, crc: bool
) -> None:
    args = [] if crc else ["--no-crc"]
    messages: list[bytes | str] = [
        *TEXTS,
        b"\x00\x01\xff",
        b"",
        bytes(range(256)) * 4096,  # 1 MiB
        "ü" * (1 << 19),  # 1 MiB of UTF-8
    ]
    server = cs.start_server(csharp["NpipesServer"], [*args, pipe_name], cs.mono_env(dotnet_tmp))
    try:
        with npipes.connect(pipe_name, dotnet=True, crc=crc, timeout=WAIT) as conn:
            assert conn.peer.pid == server.pid
            for message in messages:
                conn.send(message)
                reply = conn.recv(timeout=WAIT)
                assert type(reply) is type(message)
                assert reply == message
    finally:
        code, out, err = cs.finish(server)
    assert (code, out, err) == (0, f"echoed {len(messages)}\n", "")


def test_a_csharp_server_reports_a_missing_crc_and_keeps_the_connection(
    csharp: dict[str, Path], dotnet_tmp: str, pipe_name: str
) -> None:
    """The C# side requires a CRC (npipes' crc=True): a frame without one is refused,
    the next one (with a CRC) is echoed."""
    server = cs.start_server(csharp["NpipesServer"], [pipe_name], cs.mono_env(dotnet_tmp))
    try:
        with npipes.connect(pipe_name, dotnet=True, timeout=WAIT) as conn:
            conn.send("no crc")
            conn.send("with crc", crc=True)
            assert conn.recv(timeout=WAIT, crc=True) == "with crc"
    finally:
        code, out, err = cs.finish(server)
    assert (code, out) == (0, "echoed 1\n")
    assert err == "NpipesServer: ChecksumError: the frame has no CRC\n"


def test_aio_talks_dotnet_framing_to_a_csharp_server(
    csharp: dict[str, Path], dotnet_tmp: str, pipe_name: str
) -> None:
    sent = [*TEXTS, "é" * 32767]

    async def talk() -> None:
        conn = await npipes.aio.connect(pipe_name, dotnet=True, framing="dotnet", timeout=WAIT)
        async with conn:
            for message in sent:
                await conn.send(message)
                assert await conn.recv(timeout=WAIT) == message

    server = cs.start_server(csharp["StreamStringServer"], [pipe_name], cs.mono_env(dotnet_tmp))
    try:
        asyncio.run(talk())
    finally:
        code, out, err = cs.finish(server)
    assert (code, out, err) == (0, f"echoed {len(sent)}\n", "")


# -- the name mapping against Mono's own ------------------------------------------------


def test_without_tmpdir_both_sides_use_tmp_and_the_windows_spelling_works(
    csharp: dict[str, Path], pipe_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No TMPDIR: .NET uses /tmp, and so does dotnet=True; \\\\.\\pipe\\NAME is the same pipe."""
    monkeypatch.delenv("TMPDIR", raising=False)
    path = f"/tmp/CoreFxPipe_{pipe_name}"
    assert resolve(pipe_name, dotnet=True).path == path
    server = cs.start_server(csharp["StreamStringServer"], [pipe_name], cs.mono_env(None))
    try:
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        with npipes.connect(
            f"\\\\.\\pipe\\{pipe_name}", dotnet=True, framing="dotnet", timeout=WAIT
        ) as conn:
            assert conn.address == path
            conn.send("hi")
            assert conn.recv(timeout=WAIT) == "hi"
    finally:
        code, out, err = cs.finish(server)
    assert (code, out, err) == (0, "echoed 1\n", "")
    assert not os.path.exists(path)  # .NET removes its socket when the stream is disposed


# -- listening where .NET listens --------------------------------------------------------


def test_listen_is_owner_only_refuses_a_live_csharp_server_and_replaces_a_dead_ones(
    csharp: dict[str, Path], dotnet_tmp: str, pipe_name: str
) -> None:
    env = cs.mono_env(dotnet_tmp)
    path = os.path.join(dotnet_tmp, f"CoreFxPipe_{pipe_name}")
    server = cs.start_server(csharp["NpipesServer"], [pipe_name], env)
    try:
        with pytest.raises(PipeInUseError, match="serves"):
            npipes.listen(pipe_name, dotnet=True)
    finally:
        server.proc.send_signal(signal.SIGKILL)  # dies without removing its socket file
        cs.finish(server)
    assert stat.S_ISSOCK(os.lstat(path).st_mode)  # stale
    with npipes.listen(pipe_name, dotnet=True, crc=True) as listener:
        st = os.lstat(path)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_uid == os.getuid()
        proc = cs.start(csharp["NpipesClient"], [pipe_name, "after"], env)
        assert echo(listener) == ["after"]
    assert cs.finish(proc) == (0, "after\n", "")
    assert not os.path.exists(path)


def test_a_csharp_server_started_later_takes_the_name_over(
    csharp: dict[str, Path], dotnet_tmp: str, pipe_name: str
) -> None:
    """.NET has no lock on POSIX: a NamedPipeServerStream deletes whatever socket file
    has its name, a live npipes listener's too. This pins the behaviour docs/dotnet.md
    warns about (one listener per name is the programs' own business)."""
    env = cs.mono_env(dotnet_tmp)
    with npipes.listen(pipe_name, dotnet=True, framing="dotnet") as listener:
        server = cs.start_server(csharp["StreamStringServer"], [pipe_name], env)
        try:
            with npipes.connect(pipe_name, dotnet=True, framing="dotnet", timeout=WAIT) as conn:
                assert conn.peer.pid == server.pid
                conn.send("to .NET")
                assert conn.recv(timeout=WAIT) == "to .NET"
        finally:
            code, out, _ = cs.finish(server)
        assert (code, out) == (0, "echoed 1\n")
        del listener  # closing it leaves the path alone: the file is no longer its own


def test_npipes_serve_answers_csharp_clients_by_the_dotnet_name(
    csharp: dict[str, Path], dotnet_tmp: str, pipe_name: str
) -> None:
    """npipes.serve with a respond function, two C# clients one after the other."""
    env = cs.mono_env(dotnet_tmp)
    with npipes.serve(pipe_name, respond=str.upper, dotnet=True, framing="dotnet"):
        for words in (["one", "two"], ["héllo €"]):
            done = cs.run(csharp["StreamStringClient"], [pipe_name, *words], env)
            assert (done.returncode, done.stdout, done.stderr) == (
                0,
                "".join(w.upper() + "\n" for w in words),
                "",
            )


@pytest.mark.parametrize("program", cs.PROGRAMS)
def test_each_csproj_builds_the_same_sources_as_mcs(program: str) -> None:
    """No .NET SDK here: at least the projects must name what mcs compiles, at C# 7.3."""
    project = (cs.EXAMPLES / program / f"{program}.csproj").read_text(encoding="utf-8")
    assert '<Project Sdk="Microsoft.NET.Sdk">' in project
    assert "<LangVersion>7.3</LangVersion>" in project
    assert '<Compile Include="../Shared/Npipes.cs" />' in project
    assert sorted(p.name for p in (cs.EXAMPLES / program).glob("*.cs")) == ["Program.cs"]
