"""Attacks around ``listen`` on POSIX: what binding the socket does to the rest of the process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PEERS = str(Path(__file__).with_name("attack11_peers.py"))


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
