"""Loads the optional C accelerator, ``npipes._speedups``, if it was built.

The accelerator holds fast paths for the v1 frame codec (``encode_small``,
``encode_small_many``, ``parse_frame``, ``parse_frames``: docs/performance.md).
Each mirrors the pure-Python function of the same name in ``npipes._frame``,
which stays the reference and is what runs without it: the C versions may only
decline (return None) where the pure ones do, and tests compare the two on
every input. ``pip install`` builds it when a C compiler is present;
``NPIPES_PURE_PYTHON=1`` ignores it (set before ``import npipes``).
"""

from __future__ import annotations

import os
from types import ModuleType

from ._crc import crc32

__all__ = ["ACCELERATED", "speedups"]


def _load() -> ModuleType | None:
    if os.environ.get("NPIPES_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from . import _speedups  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return None
    module: ModuleType = _speedups
    module.configure(crc32)  # the CRC-32 npipes picked (zlib, zlib-ng or isal)
    return module


speedups: ModuleType | None = _load()
"""The C module, or None (not built, or NPIPES_PURE_PYTHON=1)."""
ACCELERATED: bool = speedups is not None
"""Whether the C accelerator is in use."""
