"""Bind the platform backend once; the rest of npipes imports ``listen``/``connect`` from here."""

from __future__ import annotations

import sys

from ._base import ListenOptions, PeerInfo, RawListener, RawStream, WaitableListener, WaitableStream

if sys.platform == "win32":
    from .windows import connect, listen, wait_any
else:
    from .unix import connect, listen, wait_any

HAS_FIFO = sys.platform != "win32"
"""Whether this OS has FIFOs (``npipes.fifo``)."""

__all__ = [
    "HAS_FIFO",
    "ListenOptions",
    "PeerInfo",
    "RawListener",
    "RawStream",
    "WaitableListener",
    "WaitableStream",
    "connect",
    "listen",
    "wait_any",
]
