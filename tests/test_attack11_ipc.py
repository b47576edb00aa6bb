"""Attacks on the ``IPC`` facade by a hostile peer (a process of your uid running hostile code).

Security rule under attack (issue 11 §1): a hostile peer's cost in memory is
bounded by ``max_message_size`` (one message) plus the read-ahead budget,
never by how many messages it sends.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import npipes
from npipes.errors import NpipesError

PEERS = str(Path(__file__).with_name("attack11_peers.py"))
LIMIT = 1 << 20
_DATA = b"\x00npipes-ipc/1 message"  # the IPC wire: header frame, then the message frame
_ACK = b"\x00npipes-ipc/1 ack"


@pytest.mark.posix
@pytest.mark.slow
def test_ipc_sender_waiting_for_its_ack_does_not_hoard_a_flood(pipe_name: str) -> None:
    """While ``send_message`` waits for its ack it reads the peer's messages (they may
    precede the ack). A peer that sends 192 messages of 1 MiB without waiting for acks
    must not make the sender keep all of them: memory stays within one message plus
    the read-ahead budget (here < 48 MiB), whatever the outcome of the send."""
    listener = npipes.listen(pipe_name, max_message_size=LIMIT)
    victim = subprocess.Popen(
        [sys.executable, PEERS, "ipc-send-while-flooded", pipe_name, "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with listener.accept(timeout=60) as conn:
            assert victim.stdout is not None
            assert victim.stdout.readline().strip() == "connected"
            assert conn.recv(timeout=30) == _DATA
            assert conn.recv(timeout=30) == b"x"
            payload = bytes(LIMIT)
            try:
                for _ in range(192):  # never waits for an ack: a hostile peer
                    conn.send_many([_DATA, payload], timeout=5)
                conn.send(_ACK, timeout=5)
            except NpipesError:
                pass  # the victim stopped reading: that is a way to stay bounded
            out, err = victim.communicate(timeout=60)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
        listener.close()
    assert victim.returncode == 0, err
    outcome, grown = out.split()
    assert outcome in ("sent", "PipeTimeoutError"), out
    assert int(grown) < 48 * 1024, f"the IPC sender kept {int(grown) // 1024} MiB ({outcome})"
