"""Review of issue 11's library changes, with real processes: faults the changes let through.

A receiver that cannot allocate room for a large message (the address space is
limited with ``RLIMIT_AS``) must say so at once: the decoder refuses to give a
buffer, and the sync driver must not then block reading into a scratch buffer
until the peer sends more or the call times out.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import npipes
from npipes._frame import HEADER_SIZE, MAGIC, VERSION

pytestmark = pytest.mark.posix

WAIT = 60.0

_RECEIVER = textwrap.dedent(
    """
    import resource, sys, time
    import npipes

    conn = npipes.connect(sys.argv[1], timeout=30)
    with open("/proc/self/status") as status:
        size = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    # 8 MiB of headroom: small objects still fit, a 16 MiB payload buffer does not.
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    resource.setrlimit(resource.RLIMIT_AS, (size * 1024 + (8 << 20), hard))
    started = time.monotonic()
    try:
        conn.recv(timeout=float(sys.argv[2]))
        result = "received"
    except Exception as exc:
        result = type(exc).__name__
    print(result, round(time.monotonic() - started, 1), flush=True)
    """
)


def test_sync_recv_raises_at_once_when_the_payload_cannot_be_allocated(pipe_name: str) -> None:
    """A peer announces a 64 MiB message and then waits. The receiver's 16 MiB payload
    buffer cannot be allocated: recv raises MessageTooLargeError at once (it did before
    issue 11), not a PipeTimeoutError once its timeout ran out (the refused buffer was
    replaced by a scratch buffer and the driver blocked reading into it)."""
    header = MAGIC + bytes([VERSION, 0, 0, 0, 0, 0]) + (64 << 20).to_bytes(8, "little")
    assert len(header) == HEADER_SIZE
    with npipes.listen(pipe_name, framing="raw") as listener:
        proc = subprocess.Popen(
            [sys.executable, "-c", _RECEIVER, pipe_name, "12"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            with listener.accept(timeout=WAIT) as conn:
                conn.send(header, timeout=WAIT)  # and nothing more: the peer waits
                out, err = proc.communicate(timeout=WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err
    name, seconds = out.split()
    assert name == "MessageTooLargeError", (out, err)
    assert float(seconds) < 6, out
