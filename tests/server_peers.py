"""Peer programs for tests/test_server_attacks.py, run in their own process by ``helpers.start``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import npipes

if TYPE_CHECKING:
    import multiprocessing.synchronize

WAIT = 30.0


def silent_client(
    name: str,
    connected: multiprocessing.synchronize.Event,
    release: multiprocessing.synchronize.Event,
) -> None:
    """Connect (with no authkey, so never answering a challenge), then send nothing
    until ``release`` is set; sets ``connected`` once the connection is made."""
    conn = npipes.connect(name, timeout=WAIT)
    try:
        connected.set()
        release.wait(2 * WAIT)
    finally:
        conn.close()
