"""The rules of a respond server (``serve(respond=func)``, sync and asyncio), sans-I/O.

A respond server answers every message a client sends with one reply, in
order: ``func(message)``'s return value, or an *error reply*
(:func:`npipes._control.encode_error_reply`) that the client's ``request()``
raises as :class:`~npipes.errors.RemoteError`. One reply per request keeps a
client's requests and replies paired even when ``func`` fails. Both front ends
call these functions, so each decision is written once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ._control import ERROR_REPLY, carries_whole, encode_error_reply, is_error_reply

if TYPE_CHECKING:
    from ._framings import Codec
    from ._types import Payload

__all__ = [
    "check_handler_choice",
    "error_reply",
    "reply_crc",
    "reply_value",
]

ACCEPTED: Final = (
    "a respond function returns the reply: str or a bytes-like object"
    " (bytes, bytearray, memoryview, array.array, a C-contiguous numpy array)"
)


def check_handler_choice(handler: object, respond: object) -> None:
    """Check ``serve``'s ``handler``/``respond`` pair, before anything listens.

    Raises:
        TypeError: both or neither given, or the one given is not callable.
    """
    if (handler is None) == (respond is None):
        given = "both" if handler is not None else "neither"
        raise TypeError(
            "serve() takes exactly one of handler (called with each connection) or"
            f" respond= (called with each message; its return value is the reply), not {given}"
        )
    chosen, what = (handler, "handler") if respond is None else (respond, "respond")
    if not callable(chosen):
        raise TypeError(f"{what} must be callable, not {type(chosen).__name__}")


def reply_crc(request_crc: bool) -> bool | None:
    """The ``crc=`` to send a reply with: a CRC-32 when the request carried one
    (so a client's ``request(crc=True)`` gets a checked reply from any server),
    else the server's own ``crc`` setting (None)."""
    return True if request_crc else None


def reply_value(value: object) -> Payload:
    """``value`` (what the respond function returned) as a reply.

    Raises:
        TypeError: ``value`` is not ``str`` or bytes-like (None included).
        ValueError: ``value`` reads as an error reply (starts with
            :data:`npipes._control.ERROR_REPLY`), which the client would raise.
    """
    if isinstance(value, str):
        return value
    if is_error_reply(value):
        raise ValueError(
            f"the respond function returned a value starting with {ERROR_REPLY!r}, which"
            " the client would take for an error reply; raise an exception to report an error"
        )
    try:
        memoryview(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{ACCEPTED}, not {type(value).__name__}") from None
    return value  # type: ignore[return-value]


def error_reply(exc: BaseException, codec: Codec, max_size: int | None = None) -> bytes | None:
    """The error reply reporting ``exc`` on a connection with ``codec``, or None when
    that framing cannot deliver it whole as bytes (the text-only ``lines``,
    ``npipes1``, ``dotnet``, or a user's codec like them): the server closes the
    connection instead. Its text is cut to ``max_size`` bytes (the connection's
    ``max_message_size``; an error may quote the request); None if not even the
    exception's type fits."""
    reply = encode_error_reply(exc)
    if max_size is not None and len(reply) > max_size:
        reply = reply[:max_size]  # check_reply decodes a cut character as U+FFFD
        if b"\n" not in reply[len(ERROR_REPLY) :]:
            return None
    return reply if carries_whole(codec, [reply]) else None
