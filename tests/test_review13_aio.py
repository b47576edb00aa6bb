"""Review of issue 13's asyncio fast paths: the scratch-buffer reads must keep the
rules of reads into the core's own buffer (real sockets, a peer in another process)."""

from __future__ import annotations

import asyncio

import pytest

import npipes
import npipes.aio as aio
from helpers import finish, start

WAIT = 30.0


def send_raw_burst(name: str, size: int) -> None:
    """Connect with framing="raw" (no size limit here) and send ``size`` bytes in one write."""
    with npipes.connect(name, framing="raw", timeout=WAIT) as conn:
        conn.send(b"x" * size)
        conn.recv(timeout=WAIT)  # wait for the reader's "done" before closing


@pytest.mark.posix
def test_raw_reads_never_pass_max_message_size(pipe_name: str) -> None:
    """framing="raw" on a stream: a message is one read, and a read never gets more room
    than max_message_size leaves (_RawDecoder.get_buffer). A read through the aio
    scratch buffer (room < 16 KiB) must not hand the decoder a bigger chunk, which it
    refuses as a too-large message, breaking the connection."""
    total = 20_000

    async def main() -> list[int]:
        listener = await aio.listen(pipe_name, framing="raw", max_message_size=1000)
        peer = start(send_raw_burst, pipe_name, total)
        try:
            conn = await listener.accept(timeout=WAIT)
            sizes: list[int] = []
            async with asyncio.timeout(WAIT):
                while sum(sizes) < total:
                    sizes.append(len(await conn.recv()))
            await conn.send(b"done")
            await conn.aclose()
            return sizes
        finally:
            await listener.aclose()
            assert finish(peer) == 0

    sizes = asyncio.run(main())
    assert sum(sizes) == total
    assert max(sizes) <= 1000
