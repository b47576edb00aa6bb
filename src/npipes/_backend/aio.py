"""Bind the platform's asyncio backend once (imported only by ``npipes.aio``)."""

from __future__ import annotations

import sys

if sys.platform == "win32":
    from .windows_aio import (
        MAX_WRITE,
        READS_KEEP_MESSAGE_BOUNDARIES,
        AioListener,
        open_connection,
    )
else:
    from .unix_aio import (
        MAX_WRITE,
        READS_KEEP_MESSAGE_BOUNDARIES,
        AioListener,
        open_connection,
    )

__all__ = ["MAX_WRITE", "READS_KEEP_MESSAGE_BOUNDARIES", "AioListener", "open_connection"]
