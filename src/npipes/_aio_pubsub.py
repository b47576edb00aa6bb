"""``npipes.aio.publish`` / ``npipes.aio.subscribe``: publish/subscribe on asyncio.

Re-exported by :mod:`npipes.aio`. The same rules as the sync
:mod:`npipes.pubsub`, from the same sans-I/O pieces (options, encoding once,
:class:`~npipes._pubsub.SubscriberQueue`) and the connection core's
subscription rules: the accept loop is a task, and each subscriber has a
writer task that hands one frame at a time to its transport and waits until
the transport has handed all of it to the OS before taking the next, so the
frames held for a subscriber (queued, or in its transport) stay within
``max_queue``. A subscriber that disconnects leaves the count at once
(a task per subscriber waits for its end of stream).
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self, Unpack, final

from . import _control
from ._backend.aio import open_connection
from ._deadline import NO_DEADLINE, Deadline, seconds
from ._protocol import HANDSHAKE_TIMEOUT, connect_side
from ._pubsub import (
    CLOSE_TIMEOUT,
    DEFAULT_MAX_QUEUE,
    DROP_GRACE,
    OnSlow,
    SubscribeOptions,
    SubscriberQueue,
    check_framing,
    check_publish_options,
    encode_message,
    encoder_core,
    not_subscribed,
    slow_reason,
    subscription_settings,
)
from .errors import ConnectionClosedError, NpipesError, PipeTimeoutError
from .server import _AcceptFailures

if TYPE_CHECKING:
    from ._options import ListenOptions
    from ._types import Payload
    from .aio import Connection, Listener

__all__ = ["Publisher", "publish", "subscribe"]

log = logging.getLogger("npipes.pubsub")


@final
class _Subscriber:
    """One subscriber: its connection, queue and writer's wake-up event."""

    def __init__(self, conn: Connection, max_queue: int) -> None:
        self.conn = conn
        self.queue = SubscriberQueue(max_queue)
        self.wake = asyncio.Event()
        self.grace: Deadline | None = None  # set when dropped
        self.timer: asyncio.TimerHandle | None = None


@final
class Publisher:
    """A running :func:`publish` (asyncio): sends each message to every current
    subscriber. An async context manager; ``aclose()`` is idempotent."""

    def __init__(self, listener: Listener, *, max_queue: int, on_slow: OnSlow) -> None:
        check_publish_options(max_queue, on_slow)
        self.listener: Final = listener
        self.name: Final = listener.name
        self.max_queue: Final = max_queue
        """Bytes of messages held for one subscriber at most."""
        self.on_slow: Final = on_slow
        self._core = encoder_core(listener._settings)
        self._subscribed = b"".join(self._core.encode(_control.SUBSCRIBED))
        self._subs: list[_Subscriber] = []  # registered, in registration order
        self._tasks: dict[asyncio.Task[None], _Subscriber] = {}
        self._room = asyncio.Event()  # set when a queue got room or a subscriber left
        self._drop_grace = DROP_GRACE
        self._closing = False
        self._closed = asyncio.get_running_loop().create_future()
        self._accepting = asyncio.ensure_future(self._accept_loop())

    def __repr__(self) -> str:
        state = "closed" if self._closing else f"{self.subscribers} subscribers"
        return f"<npipes.aio.Publisher {self.address!r} {state}>"

    @property
    def address(self) -> str:
        """The OS address the publisher listens on."""
        return self.listener.address

    @property
    def subscribers(self) -> int:
        """Subscribers registered now (a dropped or disconnected one leaves at once)."""
        return len(self._subs)

    @property
    def closed(self) -> bool:
        return self._closing

    # -- accepting --------------------------------------------------------------

    async def _accept_loop(self) -> None:
        failures = _AcceptFailures(self.address)
        while not self._closing:
            try:
                conn = await self.listener._accept_unauthenticated()
            except (NpipesError, OSError) as exc:
                if self._closing or self.listener.closed:
                    return
                await asyncio.sleep(failures.failed(exc))  # EMFILE: do not spin
                continue
            failures.succeeded()
            sub = _Subscriber(conn, self.max_queue)
            self._tasks[asyncio.ensure_future(self._serve(sub))] = sub

    # -- one subscriber's writer ----------------------------------------------------

    async def _serve(self, sub: _Subscriber) -> None:
        conn = sub.conn
        try:
            await conn._authenticate(HANDSHAKE_TIMEOUT)
            if not self._register(sub):
                conn.abort()
                return
            # Drain means "all in the OS": the frame in flight counts until then, so
            # the transport's own buffer adds nothing to what max_queue bounds.
            conn._transport.set_write_buffer_limits(high=0)
            watcher = asyncio.ensure_future(self._watch(sub))
            try:
                await self._pump(sub)
            finally:
                watcher.cancel()
            await conn.aclose(None)  # the publisher's close() or the timer bounds it
        except (NpipesError, OSError) as exc:
            log.debug("closed a subscriber of %s: %s", self.address, exc)
            conn.abort()
        except BaseException:
            conn.abort()
            raise
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._tasks.pop(task, None)
            self._forget(sub)
            if sub.timer is not None:
                sub.timer.cancel()

    def _register(self, sub: _Subscriber) -> bool:
        if self._closing:
            return False
        sub.queue.put(self._subscribed)  # first: then every message sent from now on
        self._subs.append(sub)
        return True

    def _forget(self, sub: _Subscriber) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
        self._room.set()

    async def _watch(self, sub: _Subscriber) -> None:
        """Unregister the subscriber as soon as it leaves (its end of stream), or sends
        something (a subscriber never does)."""
        await sub.conn._wait_readable(None)
        sub.queue.left = True
        sub.wake.set()
        self._forget(sub)

    async def _pump(self, sub: _Subscriber) -> None:
        queue = sub.queue
        conn = sub.conn
        while True:
            while queue.idle:
                sub.wake.clear()
                await sub.wake.wait()
            data = queue.take()
            if data is None:
                break
            conn._check_writable()
            conn._write((data,))  # the encoded frame, whole: frames never interleave
            conn._check_written()
            await conn._protocol.drain()
            queue.sent()
            self._room.set()
        grace = sub.grace
        if queue.dropped and grace is not None and not queue.left:
            notice = _control.encode_slow_subscriber(queue.dropped)
            await conn.send(notice, timeout=grace.remaining())

    def _drop(self, sub: _Subscriber) -> None:
        """Drop a subscriber that fell behind."""
        self._subs.remove(sub)
        sub.queue.drop(slow_reason(self.max_queue))
        sub.grace = Deadline(self._drop_grace)
        loop = asyncio.get_running_loop()
        sub.timer = loop.call_later(self._drop_grace, sub.conn.abort)  # if it never reads again
        sub.wake.set()
        log.warning(
            "dropped a slow subscriber of %s (more than max_queue=%d bytes behind)",
            self.address,
            self.max_queue,
        )

    # -- publishing -----------------------------------------------------------------

    async def send(
        self,
        message: Payload,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - timeout= like the sync API
        crc: bool | None = None,
    ) -> None:
        """Queue ``message`` for every current subscriber; never waits for one to
        read (with ``on_slow="block"``, for room). It yields to the event loop
        once, so the writer tasks run even in a tight publish loop. Cancelling it
        while it waits for room sends the message to nobody.

        Args and Raises: as :meth:`npipes.Publisher.send`.
        """
        deadline = NO_DEADLINE if timeout is None else Deadline(timeout)
        data = encode_message(self._core, message, crc, self.max_queue)
        size = len(data)
        self._check_open()
        if self.on_slow == "block" and not self._room_for(size):
            try:
                async with asyncio.timeout(deadline.remaining()):
                    while not self._room_for(size):
                        self._room.clear()
                        await self._room.wait()
                        self._check_open()
            except TimeoutError as exc:
                raise self._full(deadline) from exc
        for sub in list(self._subs):
            if sub.queue.room(size):
                sub.queue.put(data)
                sub.wake.set()
            else:
                self._drop(sub)
        await asyncio.sleep(0)  # let the writers run, even in a tight publish loop

    def _room_for(self, size: int) -> bool:
        return all(sub.queue.room(size) for sub in self._subs)

    def _check_open(self) -> None:
        if self._closing:
            raise self.listener._settings.annotate(
                ConnectionClosedError("the publisher is closed; publish again to send")
            )

    def _full(self, deadline: Deadline) -> PipeTimeoutError:
        return self.listener._settings.annotate(
            PipeTimeoutError(
                f"a subscriber's queue stayed full (max_queue={self.max_queue} bytes) for"
                f" {seconds(deadline.timeout)}; the message was sent to no subscriber",
                timeout=deadline.timeout,
            )
        )

    # -- lifetime -------------------------------------------------------------------

    async def aclose(self, timeout: float | None = CLOSE_TIMEOUT) -> None:  # noqa: ASYNC109
        """Stop accepting, give queued messages up to ``timeout`` s to reach the
        subscribers, then close them (each sees ``ConnectionClosedError`` after
        every message that reached it). Idempotent; a second call waits for the first.

        Raises:
            TypeError, ValueError: ``timeout`` is not None or a number >= 0.
        """
        deadline = Deadline(timeout)  # checked before anything is closed
        if self._closing:
            await asyncio.shield(self._closed)
            return
        self._closing = True
        try:
            self._subs.clear()
            for sub in self._tasks.values():
                sub.queue.closing = True
                sub.wake.set()
            self._room.set()
            await self.listener.aclose()
            self._accepting.cancel()
            await asyncio.gather(self._accepting, return_exceptions=True)
            tasks = list(self._tasks.items())
            if tasks:
                _, pending = await asyncio.wait([t for t, _ in tasks], timeout=deadline.remaining())
                for task, sub in tasks:
                    if task in pending:
                        sub.conn.abort()  # a subscriber that stopped reading
                if pending:
                    _, pending = await asyncio.wait(pending, timeout=1.0)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*(t for t, _ in tasks), return_exceptions=True)
        except BaseException:
            for task, sub in list(self._tasks.items()):
                sub.conn.abort()
                task.cancel()
            raise
        finally:
            if not self._closed.done():
                self._closed.set_result(None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def publish(
    name: str,
    *,
    max_queue: int = DEFAULT_MAX_QUEUE,
    on_slow: OnSlow = "drop",
    **options: Unpack[ListenOptions],
) -> Publisher:
    """Listen on ``name`` and publish to every subscriber; the options, defaults
    and errors are those of :func:`npipes.publish`."""
    from . import aio  # here: npipes.aio imports this module at its end

    check_publish_options(max_queue, on_slow)
    listener = await aio.listen(name, **options)
    try:
        check_framing(listener._settings.codec)
    except ValueError:
        await listener.aclose()
        raise
    return Publisher(listener, max_queue=max_queue, on_slow=on_slow)


async def subscribe(
    name: str,
    *,
    timeout: float | None = None,  # noqa: ASYNC109 - timeout= like the sync API
    wait_for_publisher: bool = False,
    **options: Unpack[SubscribeOptions],
) -> Connection:
    """Subscribe to the publisher on ``name``: a receive-only :class:`npipes.aio.Connection`.

    Same behaviour, options and errors as :func:`npipes.subscribe`.
    """
    from . import aio  # here: npipes.aio imports this module at its end

    settings = aio._check_framing(subscription_settings(name, options, wait_for_publisher))
    deadline = Deadline(timeout)
    try:
        transport, protocol, peer = await open_connection(
            settings.address,
            deadline,
            wait_for_listener=settings.wait_for_listener,
            protocol_factory=aio._protocol_factory(settings, settings.address.path),
            allowed_uids=settings.allowed_uids,
        )
    except NpipesError as exc:
        settings.annotate(exc)
        raise
    conn = aio.Connection(transport, protocol, peer, settings)
    try:
        if settings.authkey is not None:
            await conn._handshake(connect_side(settings.authkey), deadline.remaining())
        await conn.recv(timeout=deadline.remaining())  # the core checks it is SUBSCRIBED
    except PipeTimeoutError as exc:
        conn.abort()
        raise not_subscribed(name, timeout, exc) from exc
    except BaseException:
        conn.abort()
        raise
    return conn
