"""Publish/subscribe (sync): :func:`publish`, :func:`subscribe`, :class:`Publisher`.

A publisher is a listener whose accept loop runs in a background thread. Each
subscriber gets a writer thread that authenticates it (``authkey``), registers
it, and drains its own queue. ``Publisher.send`` encodes a message once, with
the connection core's encoder (the same frame a ``Connection.send`` writes:
no second framing), and appends that one ``bytes`` object to every current
subscriber's queue; it never writes, so no subscriber can block it or the others.

Each queue is bounded in bytes (``max_queue``; the frame being written counts
until it is written), so the publisher holds at most ``max_queue`` bytes per
subscriber. Past it, ``on_slow="drop"`` removes that subscriber at once: its
queue is dropped, and after the frame in flight it is sent the slow-subscriber
notice (a control message, ``_control``) and closed, so its ``recv()`` raises
:class:`~npipes.SlowSubscriberError` after the messages that reached it. A
dropped subscriber that does not take the frame in flight within
``DROP_GRACE`` seconds is closed without the notice (it then sees the end of
stream). ``on_slow="block"`` makes ``send`` wait, within its timeout, until
every queue has room.

What both front ends share is sans-I/O, in ``_pubsub``: the options, the
encoding and the queue bookkeeping; the subscription's own rules
(receive-only, control messages) are the connection core's (``_protocol``,
``subscription=True``).
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self, Unpack, final

from . import _backend, _control
from ._deadline import NO_DEADLINE, Deadline, seconds
from ._options import ListenOptions
from ._protocol import HANDSHAKE_TIMEOUT, connect_side
from ._pubsub import (
    CLOSE_TIMEOUT,
    DEFAULT_MAX_QUEUE,
    DROP_GRACE,
    IDLE_CHECK,
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
from .connection import Connection, Listener, listen
from .errors import ConnectionClosedError, NpipesError, PipeTimeoutError
from .server import _AcceptFailures

if TYPE_CHECKING:
    from ._types import Payload

__all__ = [
    "CLOSE_TIMEOUT",
    "DEFAULT_MAX_QUEUE",
    "DROP_GRACE",
    "IDLE_CHECK",
    "OnSlow",
    "Publisher",
    "SubscribeOptions",
    "publish",
    "subscribe",
]

log = logging.getLogger("npipes.pubsub")


# -- the sync front end ----------------------------------------------------------------


@final
class _Subscriber:
    """One subscriber: its connection, queue and writer's wake-up condition."""

    def __init__(self, conn: Connection, max_queue: int, lock: threading.Lock) -> None:
        self.conn = conn
        self.queue = SubscriberQueue(max_queue)
        self.wake = threading.Condition(lock)
        self.grace: Deadline | None = None  # set when dropped
        self.timer: threading.Timer | None = None
        self._close_lock = threading.Lock()  # one close at a time (writer, timer, close())

    def close(self) -> None:
        with self._close_lock:
            self.conn.close()


@final
class Publisher:
    """A running :func:`publish`: sends each message to every current subscriber.

    A context manager; ``close()`` is idempotent and thread-safe, and ``send``
    may be called from several threads (each message goes to every subscriber
    whole, in one order for all).
    """

    def __init__(self, listener: Listener, *, max_queue: int, on_slow: OnSlow) -> None:
        check_publish_options(max_queue, on_slow)
        self.listener: Final = listener
        self.name: Final = listener.name
        self.max_queue: Final = max_queue
        """Bytes of messages held for one subscriber at most."""
        self.on_slow: Final = on_slow
        self._core = encoder_core(listener._settings)
        self._subscribed = b"".join(self._core.encode(_control.SUBSCRIBED))
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # a queue got room, or a subscriber left
        self._subs: list[_Subscriber] = []  # registered, in registration order
        self._workers: dict[threading.Thread, _Subscriber] = {}
        self._drop_grace = DROP_GRACE
        self._stopped = threading.Event()
        self._close_done = threading.Event()
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"npipes-publish-{self.name}", daemon=True
        )
        self._acceptor.start()

    def __repr__(self) -> str:
        state = "closed" if self._stopped.is_set() else f"{self.subscribers} subscribers"
        return f"<npipes.Publisher {self.address!r} {state}>"

    @property
    def address(self) -> str:
        """The OS address the publisher listens on."""
        return self.listener.address

    @property
    def subscribers(self) -> int:
        """Subscribers registered now. A dropped one leaves the count at once; one
        that disconnected, within about ``IDLE_CHECK`` s (or at a failed send to it)."""
        with self._lock:
            return len(self._subs)

    @property
    def closed(self) -> bool:
        return self._stopped.is_set()

    # -- accepting --------------------------------------------------------------

    def _accept_loop(self) -> None:
        failures = _AcceptFailures(self.address)
        while not self._stopped.is_set():
            try:
                conn = self.listener._accept_unauthenticated(None)
            except (NpipesError, OSError) as exc:
                if self._stopped.is_set() or self.listener.closed:
                    return
                self._stopped.wait(failures.failed(exc))  # EMFILE: do not spin
                continue
            failures.succeeded()
            try:
                self._start(conn)  # closes conn if it fails
            except RuntimeError as exc:  # no thread for it (RLIMIT_NPROC, memory)
                self._stopped.wait(failures.failed(exc))
            del conn  # keep no connection alive while waiting for the next one

    def _start(self, conn: Connection) -> None:
        sub = _Subscriber(conn, self.max_queue, self._lock)
        worker = threading.Thread(
            target=self._serve, args=(sub,), name=f"npipes-publish-{self.name}", daemon=True
        )
        with self._lock:
            if self._stopped.is_set():
                conn.close()
                return
            self._workers[worker] = sub
        try:
            worker.start()
        except BaseException:
            with self._lock:
                del self._workers[worker]
            conn.close()
            raise

    # -- one subscriber's writer ----------------------------------------------------

    def _serve(self, sub: _Subscriber) -> None:
        try:
            try:
                sub.conn._authenticate(HANDSHAKE_TIMEOUT)
            except (NpipesError, OSError, ValueError) as exc:
                log.info(
                    "closed a subscriber of %s that failed the handshake: %s", self.address, exc
                )
                return
            if self._register(sub):
                self._pump(sub)
        finally:
            with self._lock:
                self._workers.pop(threading.current_thread(), None)
                self._forget(sub)
                if sub.timer is not None:
                    sub.timer.cancel()
            sub.close()

    def _register(self, sub: _Subscriber) -> bool:
        with self._lock:
            if self._stopped.is_set():
                return False
            sub.queue.put(self._subscribed)  # first: then every message sent from now on
            self._subs.append(sub)
            return True

    def _forget(self, sub: _Subscriber) -> None:
        """Unregister ``sub`` (lock held); a blocked ``send`` may go on without it."""
        if sub in self._subs:
            self._subs.remove(sub)
        sub.queue.left = True
        self._room.notify_all()

    def _pump(self, sub: _Subscriber) -> None:
        queue = sub.queue
        conn = sub.conn
        while True:
            with self._lock:
                if queue.idle:
                    sub.wake.wait(IDLE_CHECK)
                idle = queue.idle
                data = None if idle else queue.take()
            if idle:
                if self._gone(conn):
                    return
                continue
            if data is None:
                break
            try:
                conn._write(((data,),), NO_DEADLINE)
            except (NpipesError, OSError) as exc:
                log.debug("a subscriber of %s left: %s", self.address, exc)
                return
            with self._lock:
                queue.sent()
                self._room.notify_all()
        grace = sub.grace
        if queue.dropped and grace is not None and not queue.left:
            try:
                conn.send(_control.encode_slow_subscriber(queue.dropped), timeout=grace.remaining())
            except (NpipesError, OSError) as exc:
                log.debug("could not notify a dropped subscriber of %s: %s", self.address, exc)

    def _gone(self, conn: Connection) -> bool:
        """Whether an idle subscriber left (its end of stream is readable) or sent
        something (a subscriber never does); a check that does not wait."""
        try:
            gone = conn._wait_readable(0)
        except (NpipesError, OSError) as exc:
            gone = True
            log.debug("a subscriber of %s failed: %s", self.address, exc)
        if gone:
            log.debug("a subscriber of %s left", self.address)
        return gone

    def _drop(self, sub: _Subscriber) -> None:
        """Drop a subscriber that fell behind (lock held)."""
        self._subs.remove(sub)
        sub.queue.drop(slow_reason(self.max_queue))
        sub.grace = Deadline(self._drop_grace)
        sub.timer = threading.Timer(self._drop_grace, sub.close)  # if it never reads again
        sub.timer.daemon = True
        try:
            sub.timer.start()
        except RuntimeError:  # no thread for the timer (RLIMIT_NPROC): no grace, close now
            sub.timer = None
            sub.close()
        sub.wake.notify()
        log.warning(
            "dropped a slow subscriber of %s (more than max_queue=%d bytes behind)",
            self.address,
            self.max_queue,
        )

    # -- publishing -----------------------------------------------------------------

    def send(
        self, message: Payload, *, timeout: float | None = None, crc: bool | None = None
    ) -> None:
        """Queue ``message`` for every current subscriber and return; it never waits
        for a subscriber to read (but with ``on_slow="block"``, for room).

        Args:
            message: ``str`` or bytes-like, as ``Connection.send`` (copied once).
            timeout: with ``on_slow="block"``, seconds to wait until every
                subscriber's queue has room, or None to wait as long as it takes.
            crc: add a CRC-32; None uses the publisher's setting.
        Raises:
            TypeError: ``message`` is not ``str`` or bytes-like.
            ValueError: ``message`` reads as a publish/subscribe control message.
            MessageTooLargeError: above ``max_message_size`` or ``max_queue``.
            PipeTimeoutError: ``on_slow="block"`` and a queue stayed full for
                ``timeout`` s; the message went to no subscriber.
            ConnectionClosedError: the publisher is closed.
        """
        deadline = NO_DEADLINE if timeout is None else Deadline(timeout)
        data = encode_message(self._core, message, crc, self.max_queue)
        size = len(data)
        with self._lock:
            self._check_open()
            if self.on_slow == "block":
                while not all(sub.queue.room(size) for sub in self._subs):
                    left = deadline.remaining()
                    if left is not None and left <= 0:
                        raise self._full(deadline)
                    self._room.wait(None if left is None else min(left, 3600.0))
                    self._check_open()
            for sub in list(self._subs):
                if sub.queue.room(size):
                    sub.queue.put(data)
                    sub.wake.notify()
                else:
                    self._drop(sub)

    def _check_open(self) -> None:
        if self._stopped.is_set():
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

    def close(self, timeout: float | None = CLOSE_TIMEOUT) -> None:
        """Stop accepting, give queued messages up to ``timeout`` s to reach the
        subscribers, then close them: each sees ``ConnectionClosedError`` after
        every message that reached it. Idempotent, thread-safe.

        Raises:
            TypeError, ValueError: ``timeout`` is not None or a number >= 0.
        """
        deadline = Deadline(timeout)  # checked before anything is closed
        with self._lock:
            first = not self._stopped.is_set()
            self._stopped.set()
            in_worker = threading.current_thread() in self._workers
            if first:
                self._subs.clear()
                for sub in self._workers.values():
                    sub.queue.closing = True
                    sub.wake.notify()
                self._room.notify_all()
        if not first:
            if not in_worker:
                self._close_done.wait()
            return
        try:
            self.listener.close()
            self._acceptor.join()
            with self._lock:
                workers = list(self._workers.items())
            for worker, _ in workers:
                worker.join(deadline.remaining())
            for worker, sub in workers:
                if worker.is_alive():
                    sub.close()  # wakes a writer blocked on a subscriber that stopped reading
                    worker.join(1.0)
        finally:
            self._close_done.set()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def publish(
    name: str,
    *,
    max_queue: int = DEFAULT_MAX_QUEUE,
    on_slow: OnSlow = "drop",
    **options: Unpack[ListenOptions],
) -> Publisher:
    """Listen on ``name`` and publish to every subscriber (:func:`subscribe`).

    Returns at once; subscribers are accepted in the background. The options
    are those of :func:`npipes.listen` (subscribers must use the same
    ``framing``, ``crc`` and ``authkey``).

    Args:
        max_queue: bytes of encoded messages held for one subscriber at most
            (default 8 MiB); the publisher's memory for queues stays below
            ``max_queue`` times the number of subscribers.
        on_slow: what ``send`` does for a subscriber whose queue is full:
            ``"drop"`` (default) disconnects it (its ``recv`` raises
            :class:`~npipes.SlowSubscriberError` after the messages that reached
            it) and goes on with the others at once; ``"block"`` waits for room.
    Raises:
        As :func:`npipes.listen`; TypeError/ValueError for a bad option, or a
        framing that cannot carry binary messages whole (use ``npipes``).
    """
    check_publish_options(max_queue, on_slow)
    listener = listen(name, **options)
    try:
        check_framing(listener._settings.codec)
    except ValueError:
        listener.close()
        raise
    return Publisher(listener, max_queue=max_queue, on_slow=on_slow)


def subscribe(
    name: str,
    *,
    timeout: float | None = None,
    wait_for_publisher: bool = False,
    **options: Unpack[SubscribeOptions],
) -> Connection:
    """Subscribe to the publisher on ``name``: a receive-only :class:`~npipes.Connection`.

    Returns once the publisher has registered this subscriber: it then gets
    every message published from now on (and none published before it
    subscribed), in order. ``send`` on it raises ``io.UnsupportedOperation``.
    When the publisher closes, ``recv`` raises ``ConnectionClosedError`` after the
    last message; if it dropped this subscriber for falling behind,
    :class:`~npipes.SlowSubscriberError`.

    Args:
        timeout: seconds for the whole subscribe (connect, handshake, the
            publisher's confirmation), or None.
        wait_for_publisher: if nobody publishes yet, keep trying until someone
            does or the timeout passes (default False: ``PipeNotFoundError``).
        options: see :class:`SubscribeOptions`.
    Raises:
        As :func:`npipes.connect`; PipeTimeoutError also if the listener does not
        confirm in time (it is not a publisher); ProtocolError if it sent
        something else first.
    """
    settings = subscription_settings(name, options, wait_for_publisher)
    deadline = Deadline(timeout)
    try:
        stream = _backend.connect(
            settings.address,
            deadline,
            wait_for_listener=settings.wait_for_listener,
            allowed_uids=settings.allowed_uids,
        )
    except NpipesError as exc:
        settings.annotate(exc)
        raise
    conn = Connection(stream, settings)
    try:
        if settings.authkey is not None:
            conn._handshake(connect_side(settings.authkey), deadline.remaining())
        conn.recv(timeout=deadline.remaining())  # the core checks it is SUBSCRIBED
    except PipeTimeoutError as exc:
        conn.close()
        raise not_subscribed(name, timeout, exc) from exc
    except BaseException:
        conn.close()
        raise
    return conn
