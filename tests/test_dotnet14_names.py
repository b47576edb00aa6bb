"""``dotnet=True``: reaching a .NET pipe by its .NET name (issue 14 §3).

On Linux/macOS .NET (and Mono) put a pipe NAME at ``$TMPDIR/CoreFxPipe_NAME``
(``/tmp`` without ``TMPDIR``), a shared directory: the mapping is checked here,
and so is what keeps another user's socket at that path from getting our bytes.
On Windows the option changes nothing. The real C# programs are in
tests/test_dotnet14_interop.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import dotnet14_csharp as cs
import npipes
import npipes.aio
import posix_peers
from helpers import CTX, finish, start
from npipes import InvalidPipeNameError, PipePermissionError
from npipes._names import resolve
from npipes._options import connect_settings, listen_settings

WAIT = 30.0
posix = pytest.mark.posix
needs_root = pytest.mark.skipif(
    not (hasattr(os, "geteuid") and os.geteuid() == 0),
    reason="becoming another user (setuid) needs root; run the suite as root too",
)


@pytest.fixture
def shared_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh directory like /tmp (mode 1777, every user can enter it) used as TMPDIR."""
    base = posix_peers.shared_base()
    if base is None:
        pytest.skip("no directory here is reachable by other users (TMPDIR and /tmp are private)")
    path = Path(tempfile.mkdtemp(prefix="dn", dir=base))
    path.chmod(0o1777)
    monkeypatch.setenv("TMPDIR", str(path))
    yield path
    shutil.rmtree(path)


# -- the mapping ---------------------------------------------------------------------------


@posix
def test_a_dotnet_name_is_corefxpipe_in_dotnets_temp_dir(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """.NET's Path.GetTempPath(): TMPDIR if set and not empty, else /tmp."""
    monkeypatch.setenv("TMPDIR", "/var/tmp/")
    assert resolve("demo", dotnet=True).path == "/var/tmp/CoreFxPipe_demo"
    assert resolve("demo", dotnet=True).private_dir is None  # a shared directory
    assert resolve("\\\\.\\pipe\\demo", dotnet=True).path == "/var/tmp/CoreFxPipe_demo"
    assert resolve("\\\\.\\PIPE\\demo", dotnet=True).path == "/var/tmp/CoreFxPipe_demo"
    assert resolve("/run/app/demo.sock", dotnet=True).path == "/run/app/demo.sock"
    monkeypatch.setenv("TMPDIR", "")
    assert resolve("demo", dotnet=True).path == "/tmp/CoreFxPipe_demo"
    monkeypatch.delenv("TMPDIR")
    assert resolve("demo", dotnet=True).path == "/tmp/CoreFxPipe_demo"
    assert resolve("demo").path != resolve("demo", dotnet=True).path  # npipes' own stays


@posix
@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("a/b", "only letters"),
        ("\\\\.\\pipe\\a/b", "only letters"),
        ("\\\\.\\pipe\\", "it is empty"),
        ("..", "only dots"),
        ("x" * 100, "too long for sun_path"),
        ("a\0b", "NUL"),
    ],
)
def test_a_bad_dotnet_name_is_refused_with_the_rule(name: str, rule: str) -> None:
    with pytest.raises(InvalidPipeNameError, match=rule):
        resolve(name, dotnet=True, platform="linux")


def test_on_windows_dotnet_changes_nothing() -> None:
    for name in ("demo", "\\\\.\\pipe\\demo"):
        assert resolve(name, dotnet=True, platform="win32") == resolve(name, platform="win32")


def test_the_option_is_checked_and_shared_by_every_entry_point(pipe_name: str) -> None:
    with pytest.raises(TypeError, match="dotnet must be True or False"):
        npipes.connect(pipe_name, dotnet="yes")  # type: ignore[call-overload]
    for settings in (
        connect_settings(pipe_name, {"dotnet": True}),
        listen_settings(pipe_name, {"dotnet": True}, call="serve"),
    ):
        assert settings.address == resolve(pipe_name, dotnet=True)


def test_npipes_reaches_npipes_by_the_dotnet_name(pipe_name: str) -> None:
    """Both sides with dotnet=True (POSIX: the CoreFxPipe_ socket; Windows: \\\\.\\pipe\\),
    sync listener, asyncio client."""
    with npipes.listen(pipe_name, dotnet=True) as listener:
        assert listener.address == resolve(pipe_name, dotnet=True).path
        got: list[bytes | str] = []

        def serve_one() -> None:
            with listener.accept(timeout=WAIT) as conn:
                got.append(conn.recv(timeout=WAIT))
                conn.send("pong")

        thread = threading.Thread(target=serve_one)
        thread.start()

        async def client() -> bytes | str:
            conn = await npipes.aio.connect(pipe_name, dotnet=True, timeout=WAIT)
            async with conn:
                await conn.send("ping")
                return await conn.recv(timeout=WAIT)

        try:
            assert asyncio.run(client()) == "pong"
        finally:
            thread.join(WAIT)
        assert got == ["ping"]


# -- squatting the shared directory ------------------------------------------------------


@posix
@needs_root
def test_a_socket_another_user_put_at_the_dotnet_path_gets_nothing(
    shared_tmp: Path, pipe_name: str
) -> None:
    """Another user listens at $TMPDIR/CoreFxPipe_NAME first: npipes' clients (sync,
    waiting, asyncio) refuse it before sending a byte, and so does the C# example
    client (PipeOptions.CurrentUserOnly) when Mono is here; our listen fails typed."""
    path = shared_tmp / f"CoreFxPipe_{pipe_name}"
    tools = cs.missing_tools()
    clients = 4 if tools else 5
    results = CTX.Queue()
    proc = start(posix_peers.squat, None, str(path), results, clients, WAIT)
    assert results.get(timeout=WAIT) == ("ready",)
    uid = f"uid {posix_peers.SQUATTER}"
    with pytest.raises(npipes.PipeInUseError, match="serves"):  # its probe is a client
        npipes.listen(pipe_name, dotnet=True)
    with pytest.raises(PipePermissionError, match=uid):
        npipes.connect(pipe_name, dotnet=True, timeout=WAIT)
    with pytest.raises(PipePermissionError, match=uid):
        npipes.connect(pipe_name, dotnet=True, wait_for_listener=True, timeout=WAIT)

    async def aio_client() -> None:
        await npipes.aio.connect(pipe_name, dotnet=True, timeout=WAIT)

    with pytest.raises(PipePermissionError, match=uid):
        asyncio.run(aio_client())
    if not tools:
        outdir = Path(tempfile.mkdtemp(prefix="dncs"))
        try:
            exe = outdir / "NpipesClient.exe"
            build = cs.build_command("NpipesClient", exe)
            assert subprocess.run(build, capture_output=True, timeout=300).returncode == 0
            done = cs.run(exe, [pipe_name, "secret"], cs.mono_env(str(shared_tmp)))
        finally:
            shutil.rmtree(outdir)
        assert done.returncode == 1
        assert "not owned by the current user" in done.stderr
    for _ in range(clients):
        assert results.get(timeout=WAIT) == ("got", b"")
    assert finish(proc) == 0


@posix
def test_listening_by_the_dotnet_name_makes_an_owner_only_socket(
    shared_tmp: Path, pipe_name: str
) -> None:
    """In the shared directory the socket is 0600 from the start, like every npipes
    socket; the lock file beside it keeps a second npipes listener out."""
    with npipes.listen(pipe_name, dotnet=True) as listener:
        st = os.lstat(listener.address)
        assert listener.address == str(shared_tmp / f"CoreFxPipe_{pipe_name}")
        assert (st.st_mode & 0o777, st.st_uid) == (0o600, os.getuid())
        with pytest.raises(npipes.PipeInUseError):
            npipes.listen(pipe_name, dotnet=True)
    assert sorted(os.listdir(shared_tmp)) == []  # socket and lock file removed
