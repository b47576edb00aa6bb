"""Attacks around ``listen`` on POSIX: what binding the socket does to the rest of the process."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import attack11_peers
import npipes
import posix_peers
from npipes.errors import NpipesError

PEERS = str(Path(__file__).with_name("attack11_peers.py"))


@pytest.mark.parametrize("base_length", range(20, 96))
def test_the_long_parent_fits_every_base_length(base_length: int) -> None:
    """The helper below builds a 97-character parent; every name in it is non-empty."""
    base = "/" + "b" * (base_length - 1)
    parts = attack11_peers.long_parent_parts(base)
    assert all(parts)
    assert len(os.path.join(base, *parts)) == 97


@pytest.mark.posix
@pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"),
    reason="no /proc/self/fd (macOS, BSD): npipes can bind a long path only under a"
    " process-wide umask there (design limit)",
)
def test_listen_on_a_long_path_never_changes_the_mode_of_other_threads_files(
    tmp_path: Path,
) -> None:
    """A path too long for the temporary name beside it made ``listen`` bind in place
    under a process-wide ``umask``: while ``allow_other_users=True`` bound (umask
    0o111), a file another thread created with mode 0666 stayed world-writable, so
    another local user could rewrite it. Every such file must get the process's 0644."""
    os.chmod(tmp_path, 0o755)
    done = subprocess.run(
        [sys.executable, PEERS, "listen-long-path-beside-a-thread", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    wrong, _, created, modes = done.stdout.split(maxsplit=3)
    assert int(created) > 0
    assert wrong == "0", f"{wrong} of {created} files another thread created had modes {modes}"


ATTACKER_RENAMES = r"""
import os, sys, time
os.setgroups([]); os.setgid(4242); os.setuid(4242)
shared, target, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
prepared = os.path.join(shared, "prepared")
seen = set()
print("ready", flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end and not os.path.exists(os.path.join(shared, "done")):
    if not os.path.exists(prepared):  # a directory of ours with s -> the victim's file
        os.mkdir(prepared)
        os.chmod(prepared, 0o777)
        os.symlink(target, os.path.join(prepared, "s"))
    for entry in os.scandir(shared):
        if entry.name.startswith(".") and entry.name not in seen:  # listen's temporary dir
            seen.add(entry.name)
            try:
                os.rename(entry.path, entry.path + ".gone")
                os.rename(prepared, entry.path)
            except OSError:
                pass
"""


@pytest.mark.posix
@pytest.mark.skipif(
    not (hasattr(os, "geteuid") and os.geteuid() == 0),
    reason="the attacker becomes another user (setuid), which needs root: run as root",
)
def test_listen_in_a_directory_others_write_never_chmods_through_their_symlink(
    tmp_path: Path,
) -> None:
    """In a directory others may write without the sticky bit (0777), another user
    swaps ``listen``'s temporary directory for one of theirs holding ``s`` -> a file of
    the victim, hoping to land between the bind and the chmod: the chmod would follow
    the symlink and (``allow_other_users``) make the victim's file world-writable.
    The victim listens for 8 s; its file must keep its mode, and every failure is typed."""
    base = posix_peers.shared_base()
    if base is None:
        pytest.skip("no directory here is reachable by other users (TMPDIR and /tmp are private)")
    shared = Path(tempfile.mkdtemp(prefix="npa11r", dir=base))
    shared.chmod(0o777)
    precious = tmp_path / "precious"
    precious.write_bytes(b"victim's")
    precious.chmod(0o644)
    attacker = subprocess.Popen(
        [sys.executable, "-c", ATTACKER_RENAMES, str(shared), str(precious), "60"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert attacker.stdout is not None
        assert attacker.stdout.readline().strip() == "ready"
        end = time.monotonic() + 8
        while time.monotonic() < end and stat.S_IMODE(precious.stat().st_mode) == 0o644:
            with contextlib.suppress(NpipesError):  # the attacker got in the way: typed
                npipes.listen(str(shared / "app.sock"), allow_other_users=True).close()
    finally:
        (shared / "done").touch()
        attacker.wait(30)
        if attacker.stdout is not None:
            attacker.stdout.close()
        shutil.rmtree(shared)
    assert stat.S_IMODE(precious.stat().st_mode) == 0o644, "the victim's file was chmod-ed"
