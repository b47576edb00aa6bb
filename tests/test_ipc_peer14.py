"""``IPC.peer``: who is at the other end of the facade's connection (issue 14: the
CLI's ``recv --json`` reports ``peer_pid`` through it, not through IPC internals)."""

from __future__ import annotations

import subprocess
import sys
import uuid

from npipes.ipc import IPC


def test_ipc_peer_is_none_until_a_peer_connects_then_names_it() -> None:
    name = f"peer14-{uuid.uuid4().hex[:8]}"
    with IPC(name, timeout=60) as ipc:
        assert ipc.peer is None
        sender = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"from npipes.ipc import IPC; IPC({name!r}, timeout=60).send_message('hi')",
            ]
        )
        try:
            assert ipc.receive_message() == "hi"
            peer = ipc.peer
            assert peer is not None
            assert peer.pid in (None, sender.pid)  # None where the OS does not say
            if sys.platform != "win32":
                assert peer.pid == sender.pid
        finally:
            assert sender.wait(timeout=60) == 0
