"""The asyncio Unix listener under faults: a failing accept, another user, another loop.

An accept that fails with an OS error it cannot wait out raises a typed error and leaves
the listener serving; a connection from another uid (its socket file opened up by hand)
is closed at once and never handed out; a listener whose accept timed out in one
``asyncio.run`` closes cleanly from another.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

import npipes
import npipes.aio

pytestmark = pytest.mark.posix
WAIT = 30.0


async def _echo_once(listener: npipes.aio.Listener, path: str) -> None:
    client = await npipes.aio.connect(path, timeout=WAIT)
    server = await listener.accept(timeout=WAIT)
    try:
        await client.send("ping", timeout=WAIT)
        assert await server.recv(timeout=WAIT) == "ping"
        assert server.peer.uid == os.getuid()
    finally:
        await client.aclose()
        await server.aclose()


def test_accept_failing_with_an_os_error_raises_typed_and_listener_recovers(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "a.sock")

    async def main() -> BaseException:
        async with await npipes.aio.listen(path) as listener:
            fd = listener._raw._raw.listening_socket.fileno()  # type: ignore[attr-defined]
            backup = os.dup(fd)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, fd)  # accept() on it: ENOTSOCK
            try:
                with pytest.raises(OSError) as info:  # noqa: PT011 - checked below
                    await listener.accept(timeout=WAIT)
            finally:
                os.dup2(backup, fd)
                os.close(backup)
                os.close(null)
            await _echo_once(listener, path)
            return info.value

    error = asyncio.run(main())
    assert isinstance(error, npipes.NpipesError), repr(error)


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="needs root (setuid)")
def test_another_users_connection_is_closed_and_never_handed_out() -> None:
    folder = tempfile.mkdtemp(prefix="npipes-other-user-")  # pytest's tmp_path is 0700
    try:
        os.chmod(folder, 0o755)
        _other_user_connects(os.path.join(folder, "b.sock"))
    finally:
        shutil.rmtree(folder)


def _other_user_connects(path: str) -> None:
    other = textwrap.dedent(
        f"""
        import os, socket
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)  # another user, from here on
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout({WAIT})
        s.connect({path!r})
        print("closed" if s.recv(1) == b"" else "open", flush=True)
        """
    )

    async def main() -> str:
        async with await npipes.aio.listen(path) as listener:
            os.chmod(path, 0o666)  # opened up by hand: the uid check still holds
            accepting = asyncio.ensure_future(listener.accept(timeout=WAIT))
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                other,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), WAIT)
            assert proc.returncode == 0, err
            assert not accepting.done()  # the other user's connection was not handed out
            client = await npipes.aio.connect(path, timeout=WAIT)
            server = await accepting
            assert server.peer.uid == os.getuid()
            await client.aclose()
            await server.aclose()
            return out.decode().strip()

    assert asyncio.run(main()) == "closed"


def test_listener_closed_from_another_event_loop(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sock")

    async def open_and_time_out() -> npipes.aio.Listener:
        listener = await npipes.aio.listen(path)
        with pytest.raises(npipes.PipeTimeoutError):
            await listener.accept(timeout=0.2)  # leaves a wait for readable behind
        return listener

    listener = asyncio.run(open_and_time_out())  # that loop is closed now
    asyncio.run(listener.aclose())
    assert listener.closed
    assert not os.path.exists(path)
