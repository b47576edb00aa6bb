"""Review of issue 13: at the Connection level, the accelerated build and the pure
path (NPIPES_PURE_PYTHON=1) give the same results and errors, in the same order,
on hostile streams (bad CRCs, missing CRCs with crc=True per call or per connection,
bad UTF-8, max_message_size, not-npipes bytes, a torn end; recv, recv_many, recv_into)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.posix  # the peer writes raw bytes through a Unix socket

TESTS = Path(__file__).parent


def _outcomes(pure: bool) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    if pure:
        env["NPIPES_PURE_PYTHON"] = "1"
    else:
        env.pop("NPIPES_PURE_PYTHON", None)
    done = subprocess.run(
        [sys.executable, "-m", "review13_peers", "0", "200"],
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_accelerated_and_pure_connections_agree_on_hostile_streams() -> None:
    fast, pure = _outcomes(pure=False), _outcomes(pure=True)
    assert pure["accelerated"] is False
    for seed, (a, b) in enumerate(zip(fast["runs"], pure["runs"], strict=True)):
        assert a == b, f"seed {seed}"
    # The streams reach every rule: each kind of error shows up somewhere.
    kinds = {call[2] for run in pure["runs"] for call in run}
    assert {"ok", "ChecksumError", "ProtocolError", "MessageTooLargeError"} <= kinds
    assert {"BufferTooSmallError", "ConnectionClosedError"} <= kinds
