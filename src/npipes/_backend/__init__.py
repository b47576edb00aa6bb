"""Bind the platform backend once; the rest of npipes imports ``listen``/``connect`` from here."""

from __future__ import annotations

import sys

from ._base import ListenOptions, PeerInfo, RawListener, RawStream

if sys.platform == "win32":
    from .windows import connect, listen
else:
    from .unix import connect, listen

HAS_FIFO = sys.platform != "win32"
"""Whether this OS has FIFOs (``npipes.fifo``)."""

__all__ = ["HAS_FIFO", "ListenOptions", "PeerInfo", "RawListener", "RawStream", "connect", "listen"]
