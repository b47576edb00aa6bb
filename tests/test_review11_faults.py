"""Review of issue 11's library changes, with real processes: faults the changes let through.

A receiver that cannot allocate room for a large message (the address space is
limited with ``RLIMIT_AS``) must say so at once: the decoder refuses to give a
buffer, and the sync driver must not then block reading into a scratch buffer
until the peer sends more or the call times out.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap

import pytest

import npipes
from npipes._frame import HEADER_SIZE, MAGIC, VERSION

pytestmark = pytest.mark.posix

WAIT = 60.0

_RECEIVER = textwrap.dedent(
    """
    import resource, sys, time
    import npipes

    conn = npipes.connect(sys.argv[1], timeout=30)
    with open("/proc/self/status") as status:
        size = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    # 8 MiB of headroom: small objects still fit, a 16 MiB payload buffer does not.
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    resource.setrlimit(resource.RLIMIT_AS, (size * 1024 + (8 << 20), hard))
    started = time.monotonic()
    try:
        conn.recv(timeout=float(sys.argv[2]))
        result = "received"
    except Exception as exc:
        result = type(exc).__name__
    print(result, round(time.monotonic() - started, 1), flush=True)
    """
)


def test_sync_recv_raises_at_once_when_the_payload_cannot_be_allocated(pipe_name: str) -> None:
    """A peer announces a 64 MiB message and then waits. The receiver's 16 MiB payload
    buffer cannot be allocated: recv raises MessageTooLargeError at once (it did before
    issue 11), not a PipeTimeoutError once its timeout ran out (the refused buffer was
    replaced by a scratch buffer and the driver blocked reading into it)."""
    header = MAGIC + bytes([VERSION, 0, 0, 0, 0, 0]) + (64 << 20).to_bytes(8, "little")
    assert len(header) == HEADER_SIZE
    with npipes.listen(pipe_name, framing="raw") as listener:
        proc = subprocess.Popen(
            [sys.executable, "-c", _RECEIVER, pipe_name, "12"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            with listener.accept(timeout=WAIT) as conn:
                conn.send(header, timeout=WAIT)  # and nothing more: the peer waits
                out, err = proc.communicate(timeout=WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err
    name, seconds = out.split()
    assert name == "MessageTooLargeError", (out, err)
    assert float(seconds) < 6, out


_LINES_RECEIVER = textwrap.dedent(
    """
    import asyncio, resource, sys
    import npipes, npipes.aio

    def limit_memory():
        with open("/proc/self/status") as status:
            size = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
        # Room for a 16 MiB line buffer (and its copy while it doubles), not for 32 MiB.
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        resource.setrlimit(resource.RLIMIT_AS, (size * 1024 + (40 << 20), hard))

    def report(result):
        if isinstance(result, (bytes, str)):
            print("message", len(result), flush=True)
        else:
            print(type(result).__name__, flush=True)

    async def aio_main(name):
        conn = await npipes.aio.connect(name, timeout=30, framing="lines")
        limit_memory()
        try:
            report(await conn.recv(timeout=30))
        except Exception as exc:
            report(exc)

    name, api = sys.argv[1], sys.argv[2]
    if api == "aio":
        asyncio.run(aio_main(name))
    else:
        conn = npipes.connect(name, timeout=30, framing="lines")
        limit_memory()
        try:
            report(conn.recv(timeout=30))
        except BaseException as exc:
            report(exc)
    """
)


@pytest.mark.parametrize("api", ["sync", "aio"])
def test_a_line_whose_buffer_cannot_grow_is_a_typed_error_not_a_cut_message(
    pipe_name: str, api: str
) -> None:
    """A peer sends a 64 MiB line (under max_message_size) to a receiver that cannot
    grow its line buffer past 16 MiB. recv raises MessageTooLargeError: not a bare
    MemoryError (sync), and not the first part of the line delivered as a whole
    message (aio: the transport's fatal error from get_buffer read as a clean end)."""
    line = b"x" * (64 << 20)
    with npipes.listen(pipe_name, framing="raw") as listener:
        proc = subprocess.Popen(
            [sys.executable, "-c", _LINES_RECEIVER, pipe_name, api],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            with listener.accept(timeout=WAIT) as conn:
                with contextlib.suppress(npipes.ConnectionClosedError):
                    conn.send(line, timeout=WAIT)  # the receiver gives up part-way
                out, err = proc.communicate(timeout=WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err
    assert out.split() == ["MessageTooLargeError"], (out, err[-2000:])


def test_forked_childs_closed_asyncio_connection_leaves_no_inheritable_descriptor(
    pipe_name: str,
) -> None:
    """A forked child that aborts an inherited asyncio connection keeps the descriptor
    number pointing at /dev/null (the parent's loop must not lose the socket): that
    descriptor must stay close-on-exec like the socket it replaced, or every program
    the child execs inherits it."""
    import asyncio
    import os
    import warnings

    import npipes.aio as aio

    async def main() -> bytes:
        async with await aio.listen(pipe_name) as listener:
            client = await aio.connect(pipe_name, timeout=WAIT)
            conn = await listener.accept(timeout=WAIT)
            fd = client._transport.get_extra_info("socket").fileno()
            assert not os.get_inheritable(fd)
            answer_r, answer_w = os.pipe()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
                pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                code = 1
                try:
                    client.abort()
                    os.write(answer_w, b"inheritable" if os.get_inheritable(fd) else b"cloexec")
                    code = 0
                finally:
                    os._exit(code)
            os.close(answer_w)
            try:
                answer = await asyncio.to_thread(os.read, answer_r, 100)
            finally:
                os.close(answer_r)
            _, status = await asyncio.to_thread(os.waitpid, pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            await client.send("after fork", timeout=WAIT)
            assert await conn.recv(timeout=WAIT) == "after fork"
            await client.aclose()
            await conn.aclose()
            return answer

    assert asyncio.run(main()) == b"cloexec"
