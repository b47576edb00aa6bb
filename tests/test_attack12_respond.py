"""Attacks on ``serve(respond=...)`` (issue 12 §2) by a hostile client process."""

from __future__ import annotations

import pytest

import attack12_peers
import npipes
from helpers import CTX, finish, start

WAIT = 30.0
REQUEST = b"x" * 65536
PIPELINED = 1024
"""Requests the client tries to send without reading a reply: 64 MiB."""


def pipeline(conn: npipes.Connection) -> int:
    """Send requests and read no reply until a send stalls for 3 s; how many got in."""
    for sent in range(PIPELINED):
        try:
            conn.send(REQUEST, timeout=3.0)
        except npipes.PipeTimeoutError:
            return sent
    return PIPELINED


@pytest.mark.posix  # the server measures its RSS with resource.getrusage
@pytest.mark.parametrize("front", ["sync", "aio"])
def test_pipelined_requests_without_reading_cost_the_server_no_memory(
    pipe_name: str, front: str
) -> None:
    """The server stops reading once its replies back up: the client's sends stall
    (the backlog stays in the OS buffers), and the server's memory stays flat."""
    ready, stop, results = CTX.Event(), CTX.Event(), CTX.Queue()
    proc = start(attack12_peers.respond_server, pipe_name, front, ready, stop, results)
    try:
        assert ready.wait(WAIT)
        with npipes.connect(pipe_name, timeout=WAIT) as conn:
            assert pipeline(conn) < PIPELINED // 4  # under 16 MiB got in before the server stalled
            stop.set()
            before, after = results.get(timeout=3 * WAIT)
    finally:
        stop.set()
        assert finish(proc) == 0
    assert after - before < 32 * 1024  # KiB: far below the 64 MiB the client pushed


@pytest.mark.parametrize("front", ["sync", "aio"])
def test_an_error_reply_longer_than_max_message_size_is_cut_not_a_closed_connection(
    pipe_name: str, front: str
) -> None:
    """A client whose request makes the respond function raise an error longer than
    ``max_message_size`` gets a RemoteError (its text cut to fit), and the
    connection stays usable."""
    ready, stop = CTX.Event(), CTX.Event()
    proc = start(attack12_peers.quoting_server, pipe_name, front, ready, stop)
    try:
        assert ready.wait(WAIT)
        limit = attack12_peers.LIMIT
        with npipes.connect(pipe_name, timeout=WAIT, max_message_size=limit) as conn:
            for _ in range(2):
                with pytest.raises(npipes.RemoteError, match="bad request") as info:
                    conn.request(b"x" * (limit - 24), timeout=WAIT)
                assert info.value.remote_type == "ValueError"
    finally:
        stop.set()
        assert finish(proc) == 0
