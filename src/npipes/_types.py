"""Type aliases shared by the modules (typing only; nothing here runs)."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from typing_extensions import Buffer

    Payload: TypeAlias = Buffer | str
    """A message: ``str`` travels as UTF-8 text, any bytes-like object as binary."""

__all__ = ["Buffer", "Payload"]
