"""Review of issue 14's bridge: one message the local framing cannot carry does not kill it."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

if sys.platform != "win32":
    pytest.importorskip("zmq", reason="the bridge needs pyzmq (pip install 'npipes[bridge]')")

import npipes
from bridge14_procs import Procs, bridge, free_port

pytestmark = pytest.mark.posix


@pytest.fixture
def procs() -> Iterator[Procs]:
    all_procs = Procs()
    yield all_procs
    all_procs.cleanup()


def test_a_message_the_local_framing_cannot_carry_is_dropped(procs: Procs) -> None:
    """The far program sends "a\\nb" to a bridge whose local side uses --framing lines:
    that message is dropped (logged), the bridge goes on and delivers the next one."""
    link = f"tcp://127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory(prefix="r14b") as tmp:
        near_name, far_name = str(Path(tmp, "near.sock")), str(Path(tmp, "far.sock"))
        near = procs.add(
            bridge(None, "--name", near_name, "--framing", "lines", "--zmq-bind", link)
        )
        procs.add(bridge(None, "--name", far_name, "--zmq-connect", link))
        near_conn = npipes.connect(near_name, framing="lines", timeout=60, wait_for_listener=True)
        far_conn = npipes.connect(far_name, timeout=60, wait_for_listener=True)
        with near_conn, far_conn:
            far_conn.send("a\nb", timeout=60)
            far_conn.send("ok", timeout=60)
            got = near_conn.recv(timeout=60)
        assert got == "ok"
        assert near.popen.poll() is None, near.stderr
