"""The sans-I/O part of publish/subscribe, shared by ``npipes.pubsub`` and ``npipes.aio``.

The options and their checks, the framing check, encoding a message once for
every subscriber, and one subscriber's queue bounded in bytes
(:class:`SubscriberQueue`). No I/O, no threads, no event loop: the front ends
(``pubsub.py``, ``_aio_pubsub.py``) only move frames and wait. The
subscription's own rules (receive-only, control messages) are the connection
core's (``_protocol``, ``subscription=True``).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, Literal, final

from . import _control
from ._deadline import seconds
from ._options import Options, Settings, connect_settings
from ._protocol import ConnectionCore
from .errors import MessageTooLargeError, PipeTimeoutError

if TYPE_CHECKING:
    from collections.abc import Collection

    from ._framings import Codec
    from ._types import Payload

__all__ = [
    "CLOSE_TIMEOUT",
    "DEFAULT_MAX_QUEUE",
    "DROP_GRACE",
    "IDLE_CHECK",
    "OnSlow",
    "SubscribeOptions",
    "SubscriberQueue",
    "check_framing",
    "check_publish_options",
    "encode_message",
    "encoder_core",
    "not_subscribed",
    "slow_reason",
    "subscription_settings",
]

DEFAULT_MAX_QUEUE: Final = 8 * 1024 * 1024
"""Bytes of encoded messages a publisher holds for one subscriber (8 MiB)."""
DROP_GRACE: Final = 10.0
"""Seconds a dropped subscriber has to take the frame in flight (then it is sent
the slow-subscriber notice); after them it is closed without it."""
IDLE_CHECK: Final = 1.0
"""Seconds between the checks that an idle subscriber is still there (sync writers)."""
CLOSE_TIMEOUT: Final = 5.0
"""Default seconds ``Publisher.close`` gives queued messages to reach subscribers."""

OnSlow = Literal["drop", "block"]


class SubscribeOptions(Options, total=False):
    """The options of :func:`subscribe`: :class:`npipes.Options` (``crc``,
    ``framing``, ``max_message_size``, ``authkey``, ``allow_pickle``; use the
    publisher's ``framing`` and ``authkey``), plus ``allowed_uids`` (POSIX: user ids
    whose publisher you accept besides your own)."""

    allowed_uids: Collection[int]


_SUBSCRIBE_KEYS: Final = frozenset(Options.__annotations__) | {"allowed_uids"}


def check_publish_options(max_queue: int, on_slow: str) -> None:
    """The checks of ``publish``'s own options (sync and asyncio), at the call."""
    if isinstance(max_queue, bool) or not isinstance(max_queue, int):
        raise TypeError(f"max_queue must be an int (bytes), not {max_queue!r}")
    if max_queue < 1:
        raise ValueError(f"max_queue must be at least 1 byte, not {max_queue!r}")
    if on_slow not in ("drop", "block"):
        raise ValueError(f'on_slow must be "drop" or "block", not {on_slow!r}')


def check_framing(codec: Codec) -> None:
    """Refuse a framing that cannot carry the control messages whole and binary
    (text-only framings, or ``raw`` without message boundaries)."""
    probe = [_control.SUBSCRIBED, _control.encode_slow_subscriber("probe")]
    if not _control.carries_whole(codec, probe):
        raise ValueError(
            f"publish/subscribe needs a framing that keeps binary messages whole; the"
            f" {codec.name} framing does not: use framing='npipes' (or 'multiprocessing')"
        )


def encoder_core(settings: Settings) -> ConnectionCore:
    """A connection core used only to encode the publisher's messages (with the
    listener's framing, CRC and size limit: what each subscriber's connection would)."""
    return ConnectionCore(
        settings.codec,
        crc=settings.crc,
        max_message_size=settings.max_message_size,
        message_mode=False,
        name=settings.name,
        address=settings.address.path,
    )


def encode_message(
    core: ConnectionCore, message: Payload, crc: bool | None, max_queue: int
) -> bytes:
    """``message`` encoded once, as one ``bytes`` shared by every subscriber's queue.

    Raises:
        ValueError: the message reads as a publish/subscribe control message.
        TypeError, MessageTooLargeError: as ``Connection.send``; also a frame
            larger than ``max_queue`` (no queue could ever hold it).
    """
    text = message.encode("utf-8", "surrogatepass") if isinstance(message, str) else message
    if _control.is_subscription_control(text):  # str too: some framings drop the type
        raise ValueError(
            "cannot publish a message that starts like an npipes publish/subscribe"
            " control message (NUL + 'npipes-pubsub/'); add a prefix byte"
        )
    parts = core.encode(message, crc)
    # One copy (none for a small bytes frame): the caller may reuse its buffer.
    data = parts[0] if len(parts) == 1 and type(parts[0]) is bytes else b"".join(parts)
    if len(data) > max_queue:
        raise MessageTooLargeError(
            f"a {len(data)}-byte frame does not fit in a subscriber's queue"
            f" (max_queue={max_queue} bytes); raise max_queue or send smaller messages",
            size=len(data),
            limit=max_queue,
            name=core.name,
            address=core.address,
        )
    return data


def subscription_settings(
    name: str, options: Mapping[str, object], wait_for_publisher: bool
) -> Settings:
    """Check ``subscribe`` options: the settings of a receive-only subscription."""
    unknown = sorted(set(options) - _SUBSCRIBE_KEYS)
    if unknown:
        hint = " (use wait_for_publisher)" if "wait_for_listener" in unknown else ""
        raise TypeError(
            f"subscribe() got unexpected option(s) {', '.join(map(repr, unknown))}{hint};"
            f" it takes timeout, wait_for_publisher, {', '.join(sorted(_SUBSCRIBE_KEYS))}"
        )
    if not isinstance(wait_for_publisher, bool):
        raise TypeError(f"wait_for_publisher must be True or False, not {wait_for_publisher!r}")
    connect_options = {**options, "wait_for_listener": wait_for_publisher}
    settings = connect_settings(name, connect_options, call="subscribe")
    check_framing(settings.codec)
    return dataclasses.replace(settings, subscription=True)


def not_subscribed(name: str, timeout: float | None, exc: PipeTimeoutError) -> PipeTimeoutError:
    """The error of a subscribe whose publisher did not confirm in time."""
    error = PipeTimeoutError(
        f"no publisher confirmed the subscription to {name!r} within {seconds(timeout)};"
        " is the listener an npipes publisher (npipes.publish)?",
        timeout=timeout,
        name=exc.name,
        address=exc.address,
    )
    return error


def slow_reason(max_queue: int) -> str:
    """Why a subscriber was dropped (sent to it in the slow-subscriber notice)."""
    return (
        f"it fell more than max_queue={max_queue} bytes behind; subscribe again and"
        " read faster, or raise the publisher's max_queue"
    )


@final
class SubscriberQueue:
    """One subscriber's queue of encoded frames, bounded in bytes (sans-I/O).

    ``size`` counts queued frames plus the one being written (until
    :meth:`sent`), so what the publisher holds for a subscriber never passes
    ``max_queue``. The caller serializes access (a lock, or the event loop).
    """

    __slots__ = ("closing", "dropped", "in_flight", "items", "left", "max_queue", "size")

    def __init__(self, max_queue: int) -> None:
        self.max_queue: Final = max_queue
        self.items: collections.deque[bytes] = collections.deque()
        self.size = 0
        self.in_flight = 0
        self.dropped = ""  # why it was dropped: after the frame in flight, notify and close
        self.closing = False  # the publisher closes: write what is queued, then close
        self.left = False  # the subscriber is gone: stop at once

    def room(self, size: int) -> bool:
        """Whether a frame of ``size`` bytes fits now."""
        return self.size + size <= self.max_queue

    def put(self, data: bytes) -> None:
        self.items.append(data)
        self.size += len(data)

    def take(self) -> bytes | None:
        """The next frame to write, or None: the writer should stop (see :attr:`dropped`)."""
        if self.left or not self.items:
            return None
        data = self.items.popleft()
        self.in_flight = len(data)
        return data

    def sent(self) -> None:
        """The frame taken last is written."""
        self.size -= self.in_flight
        self.in_flight = 0

    def drop(self, reason: str) -> None:
        """Drop what is queued (the frame in flight still goes out)."""
        self.items.clear()
        self.size = self.in_flight
        self.dropped = reason

    @property
    def idle(self) -> bool:
        """Nothing to do for the writer: wait for a frame, a drop, close or departure."""
        return not (self.items or self.dropped or self.closing or self.left)
