"""Bind the platform's asyncio backend once (imported only by ``npipes.aio``)."""

from __future__ import annotations

import sys

if sys.platform == "win32":
    from .windows_aio import AioListener, open_connection
else:
    from .unix_aio import AioListener, open_connection

__all__ = ["AioListener", "open_connection"]
