"""A reconnecting client (issue 12 §5) against another local user who squats the name
after the real listener went away: every reconnect keeps the peer-uid check.

The attacker is a process that dropped to ``uid_peers.ATTACKER`` (needs root, else skip).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import npipes
import npipes.aio
import posix_peers
import uid_peers
from helpers import CTX, finish, start
from npipes import PipePermissionError
from uid_peers import ATTACKER

pytestmark = [
    pytest.mark.posix,
    pytest.mark.skipif(
        hasattr(os, "geteuid") and os.geteuid() != 0,  # Windows: the posix mark says why
        reason="the attacker becomes another user (setuid), which needs root: run as root",
    ),
]
WAIT = 30.0
SECRET = b"secret-after-restart"


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user may write (0777), where the attacker can bind the name."""
    base = posix_peers.shared_base()
    if base is None:
        pytest.skip("no directory here is reachable by other users (TMPDIR and /tmp are private)")
    path = Path(tempfile.mkdtemp(prefix="npa12", dir=base))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)


def squat_socket(path: Path) -> tuple[Any, Any]:
    """The attacker listens at ``path`` and records every byte a client sends."""
    results = CTX.Queue()
    args = ("socket", str(path), "", 3 * WAIT)
    proc = start(uid_peers.as_user, ATTACKER, {}, "squat", args, results)
    assert results.get(timeout=WAIT) == ("ready",)
    return proc, results


def squatter_got(path: Path, proc: Any, results: Any) -> tuple[Any, ...]:
    """Tell the attacker the victim is done: (accepted, count, "got", bytes read)."""
    Path(str(path) + ".done").touch()
    report = results.get(timeout=3 * WAIT)
    assert report[0] == "done", report
    assert finish(proc) == 0
    return tuple(report[1])


@pytest.mark.parametrize("allowed_uids", [(), (uid_peers.VICTIM,)])
def test_a_reconnect_never_talks_to_a_squatter_of_another_user(
    open_dir: Path, allowed_uids: tuple[int, ...]
) -> None:
    """Also with ``allowed_uids`` naming a third user: the squatter is still refused."""
    path = open_dir / "victim.sock"
    with npipes.listen(str(path)) as listener:
        trust = {"allowed_uids": set(allowed_uids)} if allowed_uids else {}
        client = npipes.connect(str(path), reconnect=True, timeout=WAIT, **trust)  # type: ignore[arg-type]
        with listener.accept(timeout=WAIT) as server:
            client.send(b"hello", timeout=WAIT)
            assert server.recv(timeout=WAIT) == b"hello"
    proc, results = squat_socket(path)  # the listener is gone; the attacker takes the name
    with client:
        with pytest.raises(PipePermissionError, match=f"uid {ATTACKER}"):
            client.recv(timeout=WAIT)
        with pytest.raises(PipePermissionError, match=f"uid {ATTACKER}"):
            client.send(SECRET, timeout=WAIT)
        assert client.reconnects == 0
    _, accepted, _, got = squatter_got(path, proc, results)
    assert accepted >= 1  # the client did reach the squatter, and refused it
    assert got == b"", got


def test_an_aio_reconnect_never_talks_to_a_squatter_of_another_user(open_dir: Path) -> None:
    path = open_dir / "victim.sock"

    async def first() -> npipes.aio.Connection:
        async with await npipes.aio.listen(str(path)) as listener:
            client = await npipes.aio.connect(str(path), reconnect=True, timeout=WAIT)
            async with await listener.accept(timeout=WAIT) as server:
                await client.send(b"hello", timeout=WAIT)
                assert await server.recv(timeout=WAIT) == b"hello"
        return client

    async def second(client: npipes.aio.Connection) -> None:
        async with client:
            with pytest.raises(PipePermissionError, match=f"uid {ATTACKER}"):
                await client.recv(timeout=WAIT)
            with pytest.raises(PipePermissionError, match=f"uid {ATTACKER}"):
                await client.send(SECRET, timeout=WAIT)
            assert client.reconnects == 0

    async def main() -> None:
        client = await first()
        proc, results = await asyncio.to_thread(squat_socket, path)
        await second(client)
        _, accepted, _, got = await asyncio.to_thread(squatter_got, path, proc, results)
        assert accepted >= 1
        assert got == b"", got

    asyncio.run(main())
