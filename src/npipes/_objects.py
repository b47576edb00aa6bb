"""Objects as messages: JSON text (send_json, recv_json) and pickles (send_pyobj, recv_pyobj).

Sans-I/O: both front ends call these, so what is accepted, refused and raised
is decided once. JSON travels as a UTF-8 text message (pyzmq's ``send_json``
names; any language reads it). A pickle travels as a binary message; turning
one back into an object runs code the sender chose, so ``recv_pyobj`` refuses
unless the connection was opened with ``allow_pickle=True``.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import PickleNotAllowedError, ProtocolError

__all__ = ["check_pickle_allowed", "decode_json", "decode_pickle", "encode_json", "encode_pickle"]

_JSON_TYPES = "dict, list, tuple, str, int, float, bool or None (nested freely)"


def encode_json(obj: object) -> str:
    """``obj`` as compact JSON text; TypeError/ValueError say what is accepted."""
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    except TypeError as exc:
        raise TypeError(f"send_json accepts {_JSON_TYPES}; {exc}") from None
    except ValueError as exc:  # a circular reference
        raise ValueError(f"send_json cannot encode this value: {exc}") from None


def decode_json(message: bytes | str) -> Any:
    """The value of a JSON message (text, or UTF-8 bytes from a peer that sends
    binary); ProtocolError for that message only if it is not JSON."""
    try:
        if isinstance(message, bytes):
            message = message.decode("utf-8")
        return json.loads(message)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise ProtocolError(
            f"recv_json got a message that is not JSON ({exc}); the message was"
            " consumed and the connection stays usable"
        ) from exc


def encode_pickle(obj: object, protocol: int | None) -> bytes:
    """``obj`` pickled; a TypeError names the object that cannot be."""
    import pickle  # only here and in decode_pickle: npipes never loads it otherwise

    if protocol is not None and (isinstance(protocol, bool) or not isinstance(protocol, int)):
        raise TypeError(f"protocol must be an int pickle protocol or None, not {protocol!r}")
    try:
        return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL if protocol is None else protocol)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise TypeError(
            f"send_pyobj accepts picklable objects; {type(obj).__name__} is not: {exc}"
        ) from exc


def check_pickle_allowed(allowed: bool) -> None:
    """Refuse ``recv_pyobj`` before anything is received, unless the user opted in."""
    if not allowed:
        raise PickleNotAllowedError(
            "recv_pyobj refused: unpickling runs code the sender chose, so it is off"
            " unless the connection is opened with allow_pickle=True (do that only for"
            " a peer you trust: your own user, allowed_uids or an authkey); nothing"
            " was received: use recv() or recv_json() instead"
        )


def decode_pickle(message: bytes | str) -> Any:
    """The object in a pickled message; ProtocolError for that message only if it is not one."""
    if isinstance(message, str):
        raise ProtocolError(
            "recv_pyobj got a text message, not a pickle; the message was consumed"
            " and the connection stays usable"
        )
    import pickle  # the caller opted in with allow_pickle=True (checked before receiving)

    try:
        return pickle.loads(message)  # the caller opted in with allow_pickle=True
    except Exception as exc:
        raise ProtocolError(
            f"recv_pyobj could not unpickle the message ({type(exc).__name__}: {exc});"
            " the message was consumed and the connection stays usable"
        ) from exc
