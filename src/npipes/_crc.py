"""CRC-32/ISO-HDLC (what ``zlib.crc32`` computes), as fast as this machine allows.

``zlib.crc32`` runs at a few GB/s, slower than a Unix socket moves bytes, so
``crc=True`` would cost a third of large-message throughput. ``zlib-ng`` and
``isal`` compute the identical checksum about ten times faster; install one of
them with the ``fast`` extra (``pip install npipes[fast]``) and npipes uses it
automatically. Set ``NPIPES_CRC=zlib`` to force the standard library.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._types import Buffer

__all__ = ["IMPLEMENTATION", "crc32"]


def _pick() -> tuple[str, Callable[[Buffer], int]]:
    if os.environ.get("NPIPES_CRC", "").lower() != "zlib":
        try:
            from zlib_ng import zlib_ng

            return "zlib-ng", zlib_ng.crc32
        except ImportError:
            pass
        try:
            from isal import isal_zlib

            return "isal", isal_zlib.crc32
        except ImportError:
            pass
    return "zlib", zlib.crc32


IMPLEMENTATION, crc32 = _pick()
"""Which library computes the CRC (``"zlib-ng"``, ``"isal"`` or ``"zlib"``), and the function."""
