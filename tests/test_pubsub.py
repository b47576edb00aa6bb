"""Publish/subscribe: ``npipes.publish``/``subscribe`` and the asyncio twins.

Real subscriber processes (tests/pubsub_peers.py), Linux and Windows (Wine);
the core's subscription rules on their own (no I/O). Slow subscribers are
"stopped" ones: they subscribe and read nothing until the test sets ``go``.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

import npipes
import npipes._aio_pubsub
import npipes.aio
import npipes.pubsub
import pubsub_peers
from helpers import CTX, finish, start
from npipes import _control
from npipes._frame import encode_frame
from npipes._framings import get_codec
from npipes._protocol import ConnectionCore, State
from npipes._pubsub import SubscriberQueue, encode_message, encoder_core, subscription_settings

WAIT = 60.0
SIZE = 4096  # bytes of each numbered message


def numbered(i: int, size: int = SIZE) -> bytes:
    return b"%08d" % i + b"x" * (size - 8)


class Peers:
    """Subscriber processes and their events, progress counters and reports."""

    def __init__(self) -> None:
        self.procs: list[Any] = []
        self.results: Any = CTX.Queue()

    def start(
        self, name: str, *, stopped: bool = False, use_aio: bool = False, wait: bool = False
    ) -> tuple[Any, Any, Any]:
        ready, go = CTX.Event(), (CTX.Event() if stopped else None)
        progress = CTX.Value("q", 0, lock=False)
        proc = start(
            pubsub_peers.subscriber, name, ready, go, progress, self.results, use_aio, wait
        )
        self.procs.append(proc)
        return ready, go, progress

    def reports(self, count: int) -> list[pubsub_peers.Report]:
        return sorted(self.results.get(timeout=WAIT) for _ in range(count))

    def finish(self) -> None:
        for proc in self.procs:
            assert finish(proc) == 0


@pytest.fixture
def peers() -> Iterator[Peers]:
    group = Peers()
    try:
        yield group
    finally:
        for proc in group.procs:
            if proc.is_alive():
                proc.kill()
                proc.join()


def wait_for(condition: Any, what: str, timeout: float = WAIT) -> None:
    """Poll ``condition()`` until true (a state of another process or thread)."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def wait_ready(*events: Any) -> None:
    for event in events:
        assert event.wait(WAIT), "a subscriber did not get ready"


def publish_paced(pub: npipes.Publisher, count: int, progress: list[Any], window: int) -> None:
    """Publish ``count`` numbered messages, staying within ``window`` messages of the
    readers in ``progress`` (so they never fall ``max_queue`` behind on a loaded machine)."""
    for i in range(count):
        wait_for(lambda i=i: min(p.value for p in progress) >= i - window, "fast subscribers")
        pub.send(numbered(i))


def send_until_timeout(pub: npipes.Publisher) -> tuple[int, float, npipes.PipeTimeoutError]:
    """Send numbered messages with ``timeout=0.5`` until one times out (on_slow="block"):
    how many went out, how long the last send waited, its error."""
    for i in range(20000):  # at most 80 MiB: the OS buffers are far smaller
        started = time.monotonic()
        try:
            pub.send(numbered(i), timeout=0.5)
        except npipes.PipeTimeoutError as exc:
            return i, time.monotonic() - started, exc
    raise AssertionError("send never waited for room")


async def send_until_timeout_async(
    pub: npipes.aio.Publisher,
) -> tuple[int, float, npipes.PipeTimeoutError]:
    for i in range(20000):
        started = time.monotonic()
        try:
            await pub.send(numbered(i), timeout=0.5)
        except npipes.PipeTimeoutError as exc:
            return i, time.monotonic() - started, exc
    raise AssertionError("send never waited for room")


# -- the core's subscription rules (sans-I/O) ---------------------------------------------


def subscription_core(**kw: object) -> ConnectionCore:
    options: dict[str, object] = {
        "crc": False,
        "max_message_size": 1 << 20,
        "message_mode": False,
        "name": "t",
        "address": "/x/t.sock",
        "subscription": True,
    }
    options.update(kw)
    return ConnectionCore(get_codec("npipes"), **options)  # type: ignore[arg-type]


def feed(core: ConnectionCore, *messages: bytes | str) -> None:
    data = b"".join(encode_frame(m) for m in messages)
    view = core.get_buffer()
    view[: len(data)] = data
    core.buffer_updated(len(data))


def test_core_subscription_refuses_sending() -> None:
    core = subscription_core()
    with pytest.raises(io.UnsupportedOperation, match="receive-only"):
        core.encode(b"x")
    with pytest.raises(io.UnsupportedOperation, match="receive-only"):
        core.encode_many([b"x"])
    with pytest.raises(io.UnsupportedOperation, match="receive-only"):
        core.check_sending()
    assert core.state is State.OPEN  # refusing touches nothing


def test_core_subscription_turns_the_slow_notice_into_its_error_in_order() -> None:
    core = subscription_core()
    notice = _control.encode_slow_subscriber("too slow")
    feed(core, _control.SUBSCRIBED, b"one", "\x00npipes-pubsub/1 text", b"two", notice, b"after")
    assert core.next_message() == _control.SUBSCRIBED  # subscribe() takes it
    assert core.next_message() == b"one"
    assert core.next_message() == "\x00npipes-pubsub/1 text"  # text is never control
    assert core.next_message() == b"two"
    with pytest.raises(npipes.SlowSubscriberError, match="too slow") as info:
        core.next_message()
    assert isinstance(info.value, ConnectionError)
    assert info.value.name == "t"
    assert core.state is State.CLOSED
    with pytest.raises(npipes.ConnectionClosedError, match="too slow"):
        core.next_message()  # nothing after the notice is delivered


@pytest.mark.parametrize("path", ["decode_available", "take_ready", "into"])
def test_core_subscription_every_receive_path_sees_the_error(path: str) -> None:
    core = subscription_core()
    feed(core, _control.SUBSCRIBED, b"one", _control.encode_slow_subscriber("r"))
    assert core.next_message() == _control.SUBSCRIBED
    if path == "decode_available":
        core.decode_available()
        assert core.next_message() == b"one"
    elif path == "take_ready":
        assert core.take_ready(10) == [b"one"]  # stops before the error
    else:
        view = memoryview(bytearray(100))
        assert core.next_message_into(view) == 3
        assert bytes(view[:3]) == b"one"
        with pytest.raises(npipes.SlowSubscriberError):
            core.next_message_into(view)
        assert bytes(view[:3]) == b"one"  # the notice never lands in the caller's buffer
        return
    with pytest.raises(npipes.SlowSubscriberError):
        core.next_message()


def test_core_subscription_needs_subscribed_first_and_only_once() -> None:
    core = subscription_core()
    feed(core, b"hello")
    with pytest.raises(npipes.ProtocolError, match="not an npipes publisher"):
        core.next_message()
    assert core.state is State.BROKEN
    core = subscription_core()
    feed(core, _control.SUBSCRIBED, _control.SUBSCRIBED)
    assert core.next_message() == _control.SUBSCRIBED
    with pytest.raises(npipes.ProtocolError, match="unexpected publish/subscribe control"):
        core.next_message()


def test_core_without_subscription_passes_control_messages_through() -> None:
    core = subscription_core(subscription=False)
    notice = _control.encode_slow_subscriber("r")
    feed(core, notice)
    assert core.next_message() == notice
    core.encode(b"x")


def test_core_subscription_allows_the_authkey_handshake() -> None:
    core = subscription_core(authenticating=True)
    steps = core.handshake(iter([b"challenge answer"]))  # type: ignore[arg-type]
    assert next(steps) == b"challenge answer"
    core.encode(b"challenge answer")  # the handshake may send
    steps.close()
    with pytest.raises(io.UnsupportedOperation):
        core.encode(b"x")


# -- the shared sans-I/O pieces --------------------------------------------------------------


def test_queue_is_bounded_in_bytes_counting_the_frame_in_flight() -> None:
    queue = SubscriberQueue(10)
    queue.put(b"12345")
    assert queue.room(5)
    assert not queue.room(6)
    assert queue.take() == b"12345"
    queue.put(b"abcde")
    assert not queue.room(1)  # the frame in flight still counts
    queue.sent()
    assert queue.room(5)
    queue.drop("slow")
    assert queue.take() is None
    assert queue.dropped == "slow"
    assert queue.size == 0


def test_publish_options_and_messages_are_checked() -> None:
    with pytest.raises(TypeError, match="max_queue"):
        npipes.publish("x", max_queue="big")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_queue"):
        npipes.publish("x", max_queue=0)
    with pytest.raises(ValueError, match="on_slow"):
        npipes.publish("x", on_slow="wait")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="wait_for_publisher"):
        npipes.subscribe("x", wait_for_listener=True)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected option"):
        npipes.subscribe("x", reconnect=True)  # type: ignore[call-arg]
    settings = subscription_settings("x", {}, False)
    core = encoder_core(settings)
    assert encode_message(core, b"abc", None, 100) == encode_frame(b"abc")
    assert encode_message(core, memoryview(b"a" * 70000), None, 1 << 20) == encode_frame(
        b"a" * 70000
    )
    for control in (_control.SUBSCRIBED, _control.encode_slow_subscriber("r")):
        with pytest.raises(ValueError, match="control message"):
            encode_message(core, control, None, 100)
        with pytest.raises(ValueError, match="control message"):
            encode_message(core, bytearray(control), None, 100)
    with pytest.raises(npipes.MessageTooLargeError, match="max_queue"):
        encode_message(core, b"x" * 100, None, 100)
    with pytest.raises(TypeError):
        encode_message(core, 5, None, 100)  # type: ignore[arg-type]


# -- sync, real processes ------------------------------------------------------------------


@pytest.mark.slow
def test_fast_subscribers_get_everything_the_slow_one_is_dropped(
    pipe_name: str, peers: Peers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3 fast subscribers and 1 that does not read: the fast ones get every message
    in order; the publish loop finishes while the slow one is stopped (it never
    waits for it); the slow one is dropped and, when it reads, gets the messages
    before the drop, then SlowSubscriberError; close() ends the fast ones cleanly."""
    count = 1000  # 4 MiB: far past max_queue plus any OS buffer
    monkeypatch.setattr(npipes.pubsub, "DROP_GRACE", WAIT)  # the slow one reads after the loop
    with npipes.publish(pipe_name, max_queue=1 << 20) as pub:
        fast = [peers.start(pipe_name) for _ in range(3)]
        slow_ready, go, _ = peers.start(pipe_name, stopped=True)
        wait_ready(slow_ready, *(ready for ready, _, _ in fast))
        assert pub.subscribers == 4  # subscribe() returned: registered
        publish_paced(pub, count, [progress for _, _, progress in fast], window=32)
        assert not go.is_set()  # the loop finished with the slow one stopped
        assert pub.subscribers == 3  # dropped at once
        go.set()
        first, last, got, in_order, error = peers.results.get(timeout=WAIT)
        assert error == "SlowSubscriberError"
        assert in_order
        assert (first, got) == (0, last + 1)
        assert got < count
        wait_for(lambda: all(p.value == count for _, _, p in fast), "fast subscribers")
    assert pub.subscribers == 0
    assert peers.reports(3) == [(0, count - 1, count, True, "ConnectionClosedError")] * 3
    peers.finish()


def test_block_waits_for_room_and_honours_its_timeout(pipe_name: str, peers: Peers) -> None:
    """on_slow="block": send waits for a full queue, raises PipeTimeoutError after its
    timeout (that message goes to nobody), and goes on once the subscriber reads."""
    with npipes.publish(pipe_name, max_queue=64 * 1024, on_slow="block") as pub:
        ready, go, _ = peers.start(pipe_name, stopped=True)
        wait_ready(ready)
        sent, waited, error = send_until_timeout(pub)
        assert waited >= 0.5
        assert error.timeout == 0.5
        assert "stayed full" in str(error)
        assert pub.subscribers == 1  # blocked, never dropped
        go.set()
        for i in range(sent, sent + 200):  # each waits for room as the subscriber reads
            pub.send(numbered(i), timeout=WAIT)
    # the timed-out message was sent to nobody, so the numbers stay consecutive
    assert peers.reports(1) == [(0, sent + 199, sent + 200, True, "ConnectionClosedError")]
    peers.finish()


def test_subscribers_count_follows_arrivals_and_departures(pipe_name: str) -> None:
    with npipes.publish(pipe_name) as pub:
        assert pub.subscribers == 0
        events = [(CTX.Event(), CTX.Event()) for _ in range(2)]
        procs = [start(pubsub_peers.subscribe_and_leave, pipe_name, *pair) for pair in events]
        wait_ready(*(ready for ready, _ in events))
        assert pub.subscribers == 2
        events[0][1].set()
        assert finish(procs[0]) == 0

        # nothing is published: the idle writer notices the departure on its own
        wait_for(lambda: pub.subscribers == 1, "the departed subscriber to leave the count")
        events[1][1].set()
        assert finish(procs[1]) == 0
    assert pub.subscribers == 0
    assert "closed" in repr(pub)


def test_only_messages_after_subscribe_are_delivered(pipe_name: str, peers: Peers) -> None:
    """Published before the subscriber came: not delivered; published after
    subscribe() returned: every one, in order."""
    with npipes.publish(pipe_name) as pub:
        for _ in range(10):
            pub.send(b"early")
        counter = -1
        stop = threading.Event()

        def loop() -> None:
            nonlocal counter
            i = 0
            while not stop.is_set():
                counter = i  # before the send: any later number starts after this read
                pub.send(numbered(i, 64))
                i += 1
                time.sleep(0.001)

        thread = threading.Thread(target=loop)
        thread.start()
        try:
            ready, _, progress = peers.start(pipe_name)
            wait_ready(ready)
            seen = counter  # subscribe() has returned: every number > seen is for it
            wait_for(lambda: progress.value >= 50, "messages after subscribing")
        finally:
            stop.set()
            thread.join(WAIT)
        last = counter
    first, got_last, _, in_order, error = peers.results.get(timeout=WAIT)
    assert in_order  # no "early" message, no gap
    assert 0 <= first <= seen + 1
    assert got_last == last
    assert error == "ConnectionClosedError"
    peers.finish()


def test_subscribe_waits_for_the_publisher(pipe_name: str, peers: Peers) -> None:
    with pytest.raises(npipes.PipeNotFoundError):
        npipes.subscribe(pipe_name, timeout=WAIT)
    ready, _, _ = peers.start(pipe_name, wait=True)
    with npipes.publish(pipe_name) as pub:
        wait_ready(ready)
        assert pub.subscribers == 1
        for i in range(5):
            pub.send(numbered(i, 16))
    assert peers.reports(1) == [(0, 4, 5, True, "ConnectionClosedError")]
    peers.finish()


def test_subscription_is_receive_only_and_ends_cleanly(pipe_name: str) -> None:
    with npipes.publish(pipe_name) as pub, npipes.subscribe(pipe_name, timeout=WAIT) as sub:
        with pytest.raises(io.UnsupportedOperation, match="receive-only"):
            sub.send(b"x")
        with pytest.raises(io.UnsupportedOperation, match="receive-only"):
            sub.send_many([b"x"])
        with pytest.raises(ValueError, match="control message"):
            pub.send(_control.encode_slow_subscriber("fake"))
        for i in range(100):
            pub.send(str(i))
        pub.close()
        pub.close()  # idempotent
        assert list(sub) == [str(i) for i in range(100)]  # then a clean end
        with pytest.raises(npipes.ConnectionClosedError):
            pub.send(b"late")


def test_close_is_thread_safe_and_ends_a_blocked_send(pipe_name: str) -> None:
    """close() from another thread ends a send waiting for room (ConnectionClosedError);
    concurrent close() calls all return once the publisher is closed."""
    pub = npipes.publish(pipe_name, max_queue=64 * 1024, on_slow="block")
    with npipes.subscribe(pipe_name, timeout=WAIT):  # never reads
        send_until_timeout(pub)
        errors: list[BaseException] = []

        def blocked_send() -> None:
            try:
                pub.send(numbered(0), timeout=WAIT)
            except npipes.ConnectionClosedError as exc:
                errors.append(exc)

        sender = threading.Thread(target=blocked_send)
        sender.start()
        closers = [threading.Thread(target=pub.close, args=(0.5,)) for _ in range(3)]
        for closer in closers:
            closer.start()
        for thread in [sender, *closers]:
            thread.join(WAIT)
            assert not thread.is_alive()
        assert len(errors) == 1
        assert "publisher is closed" in str(errors[0])
        assert pub.closed
        assert pub.subscribers == 0


@pytest.mark.parametrize("framing", ["npipes1", "raw", "lines", "dotnet"])
def test_framings_that_cannot_carry_control_messages_are_refused(
    pipe_name: str, framing: str
) -> None:
    with pytest.raises(ValueError, match="keeps binary messages whole"):
        npipes.publish(pipe_name, framing=framing)
    with pytest.raises(ValueError, match="keeps binary messages whole"):
        npipes.subscribe(pipe_name, framing=framing)
    with npipes.listen(pipe_name):  # the refused publish removed its endpoint
        pass


def test_multiprocessing_framing_works(pipe_name: str) -> None:
    framing = "multiprocessing"
    with (
        npipes.publish(pipe_name, framing=framing) as pub,
        npipes.subscribe(pipe_name, timeout=WAIT, framing=framing) as sub,
    ):
        pub.send(b"abc")
        assert sub.recv(timeout=WAIT) == b"abc"


def test_subscribe_with_authkey(pipe_name: str) -> None:
    """The authkey handshake runs on a receive-only subscription; a wrong key is refused."""
    key = b"secret key"
    with npipes.publish(pipe_name, authkey=key) as pub:
        with pytest.raises(npipes.AuthenticationError):
            npipes.subscribe(pipe_name, timeout=WAIT, authkey=b"wrong")
        with npipes.subscribe(pipe_name, timeout=WAIT, authkey=key) as sub:
            assert pub.subscribers == 1
            pub.send(b"for members")
            assert sub.recv(timeout=WAIT) == b"for members"

        async def main() -> None:
            sub = await npipes.aio.subscribe(pipe_name, timeout=WAIT, authkey=key)
            async with sub:
                await _wait_async(lambda: pub.subscribers == 1, "the asyncio subscriber")
                pub.send("hello")
                assert await sub.recv(timeout=WAIT) == "hello"

        asyncio.run(main())


def test_subscribe_to_a_listener_that_is_no_publisher(pipe_name: str) -> None:
    with npipes.listen(pipe_name) as listener:
        accepted: list[npipes.Connection] = []

        def serve(reply: bytes | None) -> None:
            conn = listener.accept(timeout=WAIT)
            accepted.append(conn)
            if reply is not None:
                conn.send(reply)

        thread = threading.Thread(target=serve, args=(b"hello",))
        thread.start()
        with pytest.raises(npipes.ProtocolError, match="not an npipes publisher"):
            npipes.subscribe(pipe_name, timeout=WAIT)
        thread.join(WAIT)
        thread = threading.Thread(target=serve, args=(None,))
        thread.start()
        with pytest.raises(npipes.PipeTimeoutError, match="no publisher confirmed") as info:
            npipes.subscribe(pipe_name, timeout=0.5)
        assert info.value.timeout == 0.5
        thread.join(WAIT)
        for conn in accepted:
            conn.close()


def test_subscriber_that_never_reads_is_closed_after_the_grace(
    pipe_name: str, peers: Peers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dropped subscriber that takes nothing more for DROP_GRACE s is closed
    without the notice: its writer thread ends, and it sees the end of stream."""
    monkeypatch.setattr(npipes.pubsub, "DROP_GRACE", 0.5)
    before = threading.active_count()
    with npipes.publish(pipe_name, max_queue=256 * 1024) as pub:
        ready, go, _ = peers.start(pipe_name, stopped=True)
        wait_ready(ready)
        (queue,) = [sub.queue for sub in pub._workers.values()]
        i = 0
        while True:  # one message at a time until the writer is stuck: the OS buffer is full
            pub.send(numbered(i))
            i += 1
            end = time.monotonic() + 2.0
            while queue.size and time.monotonic() < end:
                time.sleep(0.005)
            if queue.size:
                break
            assert i < 20000, "the writer never blocked"
        while pub.subscribers:  # then past max_queue
            pub.send(numbered(i))
            i += 1
        wait_for(lambda: threading.active_count() <= before + 1, "the writer to end")
        go.set()
        first, last, got, in_order, error = peers.results.get(timeout=WAIT)
    assert in_order
    assert got == 0 or (first, got) == (0, last + 1)
    assert error in ("ConnectionClosedError", "IncompleteMessageError")  # not the notice
    peers.finish()


@pytest.mark.slow
def test_publisher_memory_is_bounded_by_max_queue_per_subscriber(
    pipe_name: str, peers: Peers
) -> None:
    max_queue = 1 << 20
    message = b"m" * (64 * 1024)
    with npipes.publish(pipe_name, max_queue=max_queue) as pub:
        started = [peers.start(pipe_name, stopped=True) for _ in range(2)]
        started += [peers.start(pipe_name) for _ in range(2)]
        wait_ready(*(ready for ready, _, _ in started))
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for _ in range(400):  # 25 MiB
                pub.send(message)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        for _, go, _ in started[:2]:
            go.set()
    bound = 4 * max_queue + 2 * len(message) + 512 * 1024  # + the frame being built, slack
    assert peak - base < bound
    peers.reports(4)
    peers.finish()


# -- asyncio ---------------------------------------------------------------------------------


async def _wait_async(condition: Any, what: str) -> None:
    end = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def _ready_async(*events: Any) -> None:
    for event in events:
        assert await asyncio.to_thread(event.wait, WAIT), "a subscriber did not get ready"


@pytest.mark.slow
def test_aio_fast_subscribers_get_everything_the_slow_one_is_dropped(
    pipe_name: str, peers: Peers, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = 1000
    monkeypatch.setattr(npipes._aio_pubsub, "DROP_GRACE", WAIT)  # it reads after the loop

    async def main() -> None:
        async with await npipes.aio.publish(pipe_name, max_queue=1 << 20) as pub:
            fast = [peers.start(pipe_name, use_aio=True) for _ in range(2)]
            fast.append(peers.start(pipe_name))  # a sync subscriber of an asyncio publisher
            slow_ready, go, _ = peers.start(pipe_name, stopped=True, use_aio=True)
            await _ready_async(slow_ready, *(ready for ready, _, _ in fast))
            assert pub.subscribers == 4
            for i in range(count):
                await _wait_async(
                    lambda i=i: min(p.value for _, _, p in fast) >= i - 32, "fast subscribers"
                )
                await pub.send(numbered(i))
            assert not go.is_set()
            assert pub.subscribers == 3
            go.set()
            first, last, got, in_order, error = await asyncio.to_thread(
                peers.results.get, timeout=WAIT
            )
            assert error == "SlowSubscriberError"
            assert in_order
            assert (first, got) == (0, last + 1)
            assert got < count
            await _wait_async(lambda: all(p.value == count for _, _, p in fast), "fast ones")
        assert pub.subscribers == 0
        await pub.aclose()  # idempotent

    asyncio.run(main())
    assert peers.reports(3) == [(0, count - 1, count, True, "ConnectionClosedError")] * 3
    peers.finish()


def test_aio_block_and_receive_only(pipe_name: str, peers: Peers) -> None:
    async def main() -> int:
        pub = await npipes.aio.publish(pipe_name, max_queue=64 * 1024, on_slow="block")
        try:
            ready, go, _ = peers.start(pipe_name, stopped=True, use_aio=True)
            await _ready_async(ready)
            sub = await npipes.aio.subscribe(pipe_name, timeout=WAIT)
            async with sub:
                with pytest.raises(io.UnsupportedOperation, match="receive-only"):
                    await sub.send(b"x")
                assert pub.subscribers == 2
            await _wait_async(lambda: pub.subscribers == 1, "the local subscriber to leave")
            sent, waited, error = await send_until_timeout_async(pub)
            assert waited >= 0.5
            assert "stayed full" in str(error)
            assert pub.subscribers == 1
            go.set()
            for i in range(sent, sent + 200):
                await pub.send(numbered(i), timeout=WAIT)
        finally:
            await pub.aclose()
        with pytest.raises(npipes.ConnectionClosedError):
            await pub.send(b"late")
        return sent

    sent = asyncio.run(main())
    assert peers.reports(1) == [(0, sent + 199, sent + 200, True, "ConnectionClosedError")]
    peers.finish()


@pytest.mark.slow
def test_aio_publisher_memory_is_bounded_by_max_queue_per_subscriber(
    pipe_name: str, peers: Peers
) -> None:
    max_queue = 1 << 20
    message = b"m" * (64 * 1024)

    async def main() -> tuple[int, int]:
        async with await npipes.aio.publish(pipe_name, max_queue=max_queue) as pub:
            started = [peers.start(pipe_name, stopped=True, use_aio=True) for _ in range(2)]
            started += [peers.start(pipe_name, use_aio=True) for _ in range(2)]
            await _ready_async(*(ready for ready, _, _ in started))
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                for _ in range(400):  # 25 MiB
                    await pub.send(message)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            for _, go, _ in started[:2]:
                go.set()
        return base, peak

    base, peak = asyncio.run(main())
    bound = 4 * max_queue + 2 * len(message) + 512 * 1024  # + the frame being built, slack
    assert peak - base < bound
    peers.reports(4)
    peers.finish()


def test_aio_subscribe_waits_for_the_publisher(pipe_name: str) -> None:
    async def main() -> None:
        with pytest.raises(npipes.PipeNotFoundError):
            await npipes.aio.subscribe(pipe_name, timeout=WAIT)
        task = asyncio.ensure_future(
            npipes.aio.subscribe(pipe_name, timeout=WAIT, wait_for_publisher=True)
        )
        await asyncio.sleep(0.2)
        async with await npipes.aio.publish(pipe_name) as pub:
            sub = await task
            assert pub.subscribers == 1
            await pub.send("hello")
        async with sub:
            assert await sub.recv(timeout=WAIT) == "hello"
            assert [m async for m in sub] == []  # then a clean end

    asyncio.run(main())
