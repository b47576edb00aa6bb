"""Check what a caller passed to ``send`` and turn it into a buffer to write.

One helper for every codec's ``encode`` (issue 10 §3b): a wrong type fails at
the call with a message that says what is accepted, before any waiting, and a
non-contiguous buffer (a numpy slice with a step, a transposed array) fails
with a hint instead of a bare ``memoryview.cast`` error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._types import Buffer

__all__ = ["as_buffer"]

_ACCEPTED = (
    "a message is str (sent as text) or a bytes-like object (bytes, bytearray,"
    " memoryview, array.array, a C-contiguous numpy array)"
)


def as_buffer(data: object, encoding: str = "utf-8") -> tuple[Buffer, int, bool]:
    """Return ``(payload, size, is_text)`` for one message.

    ``str`` is encoded with ``encoding``; ``bytes`` is returned as is; any other
    object with the buffer protocol becomes a flat unsigned-byte memoryview
    (not copied).

    Raises:
        TypeError: ``data`` is neither ``str`` nor a bytes-like object, or is a
            buffer that is not C-contiguous.
        UnicodeEncodeError: ``data`` is a ``str`` that ``encoding`` cannot encode.
    """
    if isinstance(data, bytes):
        return data, len(data), False
    if isinstance(data, str):
        encoded = data.encode(encoding)
        return encoded, len(encoded), True
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"cannot send {type(data).__name__}: {_ACCEPTED}") from None
    if not view.c_contiguous:
        raise TypeError(
            f"cannot send a non-contiguous {type(data).__name__} buffer: copy it first,"
            " e.g. numpy.ascontiguousarray(x) or bytes(x)"
        )
    if view.itemsize != 1 or view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    return view, view.nbytes, False
