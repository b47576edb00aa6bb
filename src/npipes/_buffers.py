"""Allocate a ``bytes`` object of exact size that a transport can read into.

``recv()`` returns ``bytes``. Reading an N-byte message into a ``bytearray``
and converting it costs 2N of memory; instead, on CPython, we create the
``bytes`` object uninitialised (``PyBytes_FromStringAndSize(NULL, n)``, the
C API's documented way to build bytes in place) and hand out a writable view
of its storage. The object is not shared with anyone until it is full, and its
hash is not yet computed, so nothing can observe the writes. Elsewhere we fall
back to ``bytearray`` plus one copy.

Two rules keep this safe:

- The view owns its memory: the ctypes array it exports keeps a reference to
  the ``bytes`` object, so a view kept after the decoder (or the object) is
  gone still points at live storage (issue 10 §4; before, writing through such
  a view wrote into freed memory and could crash the interpreter).
- The ctypes prototype is private: we build our own function object for
  ``PyBytes_FromStringAndSize`` instead of setting ``restype``/``argtypes`` on
  the shared ``ctypes.pythonapi`` attribute, which other code in the process
  may use with its own prototype.

The storage is not zero-filled, so its pages are untouched until written: a
large allocation costs address space, not resident memory. The decoders still
never allocate a size a peer merely announced (see ``_frame``): they grow their
storage with the bytes that arrived.
"""

from __future__ import annotations

import sys

__all__ = ["MAX_SIZE", "allocate"]

# Below this size a copy is cheaper than the ctypes calls.
_MIN_INPLACE = 32 * 1024

MAX_SIZE = sys.maxsize - 64
"""The largest object size CPython can represent (``Py_ssize_t``, less the object header)."""


def _fallback(size: int) -> tuple[bytes | bytearray, memoryview]:
    buf = bytearray(size)
    return buf, memoryview(buf)


def _make_inplace() -> object:
    if sys.implementation.name != "cpython":  # pragma: no cover - PyPy and others; CI runs CPython
        return None
    try:
        import ctypes

        # Our own prototype: ctypes.pythonapi's attribute is shared process-wide.
        new = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_ssize_t)(
            ("PyBytes_FromStringAndSize", ctypes.pythonapi)
        )
        offset = bytes.__basicsize__ - 1  # ob_sval: the last member of PyBytesObject

        def inplace(size: int) -> tuple[bytes, memoryview]:
            obj: bytes = new(None, size)
            array = (ctypes.c_char * size).from_address(id(obj) + offset)
            array._npipes_owner = obj  # type: ignore[attr-defined]  # the view keeps obj alive
            return obj, memoryview(array).cast("B")

        # Prove it on this interpreter before trusting it.
        probe, view = inplace(_MIN_INPLACE)
        view[:4] = b"npip"
        view[-2:] = b"es"
        if probe[:4] != b"npip" or probe[-2:] != b"es" or len(probe) != _MIN_INPLACE:
            return None  # pragma: no cover - a CPython whose bytes layout differs (none known)
        return inplace
    except Exception:  # noqa: BLE001  # pragma: no cover - CPython without ctypes (some embedded builds)
        return None


_inplace = _make_inplace()


def allocate(size: int) -> tuple[bytes | bytearray, memoryview]:
    """Return ``(obj, view)``: ``view`` writes into ``obj``, ``len(obj) == size``.

    ``obj`` is ``bytes`` when it could be built in place (large sizes on
    CPython), else a ``bytearray`` the caller converts with ``bytes()``. The
    view keeps ``obj`` alive.

    Raises:
        MemoryError: ``size`` is negative, above :data:`MAX_SIZE`, or cannot be allocated.
    """
    if not 0 <= size <= MAX_SIZE:
        raise MemoryError(f"cannot allocate {size} bytes")
    if size >= _MIN_INPLACE and _inplace is not None:
        return _inplace(size)  # type: ignore[operator,no-any-return]
    return _fallback(size)
