"""Another user plants a symlink at a client's path pointing to a socket the client trusts.

Security rule under attack (docs/security.md): in a shared directory, a planted
socket symlink is a typed error and nothing is written through a symlink. The
client's uid check cannot catch a symlink to a listener of the client's own
user (or root's): the client would hand its messages to a service it never
named, chosen by the attacker.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import npipes
import npipes.aio
import posix_peers
from npipes import PipePermissionError
from npipes.ipc import IPC
from uid_peers import ATTACKER

pytestmark = [
    pytest.mark.posix,
    pytest.mark.skipif(
        not (hasattr(os, "geteuid") and os.geteuid() == 0),
        reason="the attacker becomes another user (setuid), which needs root: run as root",
    ),
]


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user may write (sticky, like /tmp), for absolute-path endpoints."""
    base = posix_peers.shared_base()
    if base is None:
        pytest.skip("no directory here is reachable by other users (TMPDIR and /tmp are private)")
    path = Path(tempfile.mkdtemp(prefix="npa11", dir=base))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path)


def plant_symlink_as_attacker(target: str, where: Path) -> None:
    """uid ATTACKER creates the symlink ``where`` -> ``target`` (it need not reach target)."""
    code = (
        "import os, sys\n"
        f"os.setgroups([]); os.setgid({ATTACKER}); os.setuid({ATTACKER})\n"
        "os.symlink(sys.argv[1], sys.argv[2])\n"
    )
    subprocess.run([sys.executable, "-c", code, target, str(where)], check=True, timeout=30)


def victim_connects(entry: str, path: str) -> None:
    if entry == "connect":
        npipes.connect(path, timeout=2).close()
    elif entry == "connect-waiting":
        npipes.connect(path, timeout=2, wait_for_listener=True).close()
    elif entry == "aio.connect":

        async def main() -> None:
            conn = await npipes.aio.connect(path, timeout=2)
            await conn.aclose()

        asyncio.run(main())
    else:
        with IPC(path, timeout=2) as ipc:
            ipc.send_message("for the service at the path I named")


@pytest.mark.parametrize("entry", ["connect", "connect-waiting", "aio.connect", "ipc"])
def test_a_symlink_to_a_trusted_listener_is_never_followed(
    open_dir: Path, pipe_name: str, entry: str
) -> None:
    """The victim's other service listens on a bare name; another user plants
    ``<shared dir>/app.sock`` -> that socket. A client of ``app.sock`` must refuse
    (``PipePermissionError``) and the other service must see no client."""
    with npipes.listen(pipe_name) as other_service:
        path = open_dir / "app.sock"
        plant_symlink_as_attacker(other_service.address, path)
        with pytest.raises(PipePermissionError):
            victim_connects(entry, str(path))
        with pytest.raises(npipes.PipeTimeoutError):
            other_service.accept(timeout=0.5).close()
