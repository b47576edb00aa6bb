"""Control messages: what request/reply and publish/subscribe say besides the user's messages.

Sans-I/O. A control message is an ordinary binary message whose payload
starts with a NUL byte and a versioned tag (docs/protocol.md, "Control
messages"), like the IPC layer's header frames: any framing carries it, and a
plain peer (C, C#, ``recv()``) sees an ordinary binary message. Only the side
that expects one (``request``, a subscription) interprets it, so a user's
message is never taken for one anywhere else; and the sides that send control
messages refuse a user message that would read as one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from .errors import NpipesError, RemoteError, SlowSubscriberError

if TYPE_CHECKING:
    from ._framings import Codec

__all__ = [
    "ERROR_REPLY",
    "SLOW_SUBSCRIBER",
    "SUBSCRIBED",
    "carries_whole",
    "check_reply",
    "encode_error_reply",
    "encode_slow_subscriber",
    "is_error_reply",
    "is_subscription_control",
    "raise_subscription_control",
]

ERROR_REPLY: Final = b"\x00npipes-reply/1 error\n"
"""Prefix of an error reply; then ``TYPE\\nMESSAGE`` in UTF-8."""

SUBSCRIBED: Final = b"\x00npipes-pubsub/1 subscribed"
"""The publisher's first message to a subscriber: it is registered, and gets
every message published from now on."""

SLOW_SUBSCRIBER: Final = b"\x00npipes-pubsub/1 slow\n"
"""Prefix of the publisher's last message to a subscriber it dropped for falling
behind; then a UTF-8 reason."""

_PUBSUB: Final = b"\x00npipes-pubsub/1 "


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "backslashreplace")


def encode_error_reply(exc: BaseException) -> bytes:
    """The error reply reporting ``exc`` (raised by a respond function) to the client."""
    return ERROR_REPLY + _utf8(type(exc).__name__) + b"\n" + _utf8(str(exc))


def is_error_reply(message: object) -> bool:
    """Whether ``message`` reads as an error reply (a respond server must not
    send such a value as a normal reply)."""
    return isinstance(message, (bytes, bytearray, memoryview)) and bytes(
        message[: len(ERROR_REPLY)]
    ).startswith(ERROR_REPLY)


def check_reply(message: bytes | str) -> bytes | str:
    """``message`` as the reply to a request, or the :class:`RemoteError` it reports."""
    if isinstance(message, bytes) and message.startswith(ERROR_REPLY):
        body = message[len(ERROR_REPLY) :].decode("utf-8", "replace")
        remote_type, _, remote_message = body.partition("\n")
        raise RemoteError(
            f"the peer's respond function raised {remote_type}: {remote_message}",
            remote_type=remote_type,
            remote_message=remote_message,
        )
    return message


def encode_slow_subscriber(reason: str) -> bytes:
    """The publisher's notice to a subscriber it drops for falling behind."""
    return SLOW_SUBSCRIBER + _utf8(reason)


def is_subscription_control(message: object) -> bool:
    """Whether ``message`` reads as a publish/subscribe control message (a
    publisher refuses to publish such a value)."""
    return isinstance(message, (bytes, bytearray, memoryview)) and bytes(
        message[: len(_PUBSUB)]
    ).startswith(_PUBSUB)


def raise_subscription_control(message: bytes) -> None:
    """On a subscription, act on a control message: raise :class:`SlowSubscriberError`
    for the slow notice; anything else with the tag is a protocol error by the publisher."""
    if message.startswith(SLOW_SUBSCRIBER):
        reason = message[len(SLOW_SUBSCRIBER) :].decode("utf-8", "replace")
        raise SlowSubscriberError(f"the publisher dropped this subscriber: {reason}")
    from .errors import ProtocolError

    raise ProtocolError(f"unexpected publish/subscribe control message {message[:40]!r}")


# -- request/reply bookkeeping (Connection.request, sync and asyncio) ------------


class OwedReplies:
    """Replies the peer still owes on one connection (sans-I/O).

    ``request()`` expects a peer that answers every message with exactly one
    reply, in order (``serve(respond=...)``, an echo server). A request whose
    caller gave up after sending it (timeout, Ctrl+C, cancellation) still gets
    its reply later: this count says how many such stale replies come before
    the next caller's own, so they are skipped and never handed to it.
    """

    __slots__ = ("owed",)

    def __init__(self) -> None:
        self.owed = 0
        """Requests sent (whole) on this connection whose reply was not taken yet."""

    def sent(self) -> None:
        """A request went out whole."""
        self.owed += 1

    def stale(self) -> bool:
        """Whether the next reply belongs to an abandoned request (skip it)."""
        return self.owed > 1

    def taken(self) -> None:
        """A reply (or the error that stands in its place) was taken from the connection."""
        if self.owed:
            self.owed -= 1

    def reset(self) -> None:
        """A new connection (reconnect): the old peer's replies will never come."""
        self.owed = 0


def reply_consumed(exc: BaseException) -> bool:
    """Whether a receive that raised ``exc`` used up one reply.

    Errors decoded in a message's place (a bad CRC, a text reply that is not
    UTF-8, a reply above ``max_message_size``) stand for that reply; a timeout,
    an interruption or the end of the connection took nothing.
    """
    from .errors import ConnectionClosedError, NpipesError, PipeTimeoutError

    return isinstance(exc, NpipesError) and not isinstance(
        exc, ConnectionClosedError | PipeTimeoutError
    )


def carries_whole(codec: Codec, messages: Sequence[bytes]) -> bool:
    """Whether ``codec`` delivers these binary ``messages`` whole, one by one and as
    ``bytes``, even when they arrive in one read: a sans-I/O round trip, so a user's
    codec is judged like the built-in ones (text-only framings and ``raw``'s
    chunks fail it)."""
    try:
        data = b"".join(
            bytes(part) for m in messages for part in codec.encode(m, crc=False, max_size=None)
        )
        decoder = codec.decoder(max_message_size=None, require_crc=False, message_mode=False)
        decoder.feed_data(data)  # one read, as a byte stream may deliver it
        if codec.message_based:
            decoder.message_end()
        got = list(iter(decoder.next_frame, None))
    except (NpipesError, ValueError, TypeError):
        return False
    return [frame.message for frame in got] == list(messages)
