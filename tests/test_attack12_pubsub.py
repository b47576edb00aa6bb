"""Attacks on publish/subscribe (issue 12 §3) by hostile subscribers."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import attack12_peers
import posix_peers
from helpers import finish, start

WAIT = 30.0

as_root = pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() != 0,
    reason="RLIMIT_NPROC binds only a non-root uid: the peer drops root (setuid), which needs root",
)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user may write (0777), for a peer that dropped root."""
    base = posix_peers.shared_base()
    if base is None:
        pytest.skip("no directory here is reachable by other users (TMPDIR and /tmp are private)")
    path = Path(tempfile.mkdtemp(prefix="npa12", dir=base))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)


@pytest.mark.posix
@as_root
def test_a_publisher_out_of_threads_keeps_accepting(open_dir: Path) -> None:
    """Clients that connect faster than threads can be started (RLIMIT_NPROC) must
    not end the publisher's accept loop: once they are gone, a subscriber gets in."""
    proc = start(attack12_peers.publisher_out_of_threads, str(open_dir / "pub.sock"), 12)
    assert finish(proc, timeout=3 * WAIT) == 0


@pytest.mark.posix
@as_root
def test_a_respond_server_out_of_threads_keeps_accepting(open_dir: Path) -> None:
    """The same for ``serve(respond=...)``: its accept loop survives a failed thread start."""
    proc = start(attack12_peers.server_out_of_threads, str(open_dir / "srv.sock"), 12)
    assert finish(proc, timeout=3 * WAIT) == 0


@pytest.mark.posix
@as_root
def test_dropping_a_slow_subscriber_without_a_spare_thread_never_fails_send(
    open_dir: Path,
) -> None:
    """Dropping a subscriber starts a grace timer (a thread); when none can start,
    ``send`` still drops it and returns (the subscriber is closed at once)."""
    proc = start(attack12_peers.publisher_drops_without_a_thread, str(open_dir / "pub.sock"))
    assert finish(proc, timeout=3 * WAIT) == 0
