"""The seed's low-level ``Pipes``: raw bytes, either side first."""

from __future__ import annotations

import threading

import pytest

from npipes import ConnectionClosedError, PipeTimeoutError
from npipes.pipes import Pipes


def test_raw_bytes_both_ways(pipe_name: str) -> None:
    first = Pipes(pipe_name, timeout=30)
    assert first.fifo is None
    assert first.pipe == pipe_name
    got: list[bytes] = []

    def other() -> None:
        with Pipes(pipe_name, timeout=30) as second:
            second.write(b"ping")
            got.append(second.read())

    thread = threading.Thread(target=other)
    with first:
        thread.start()
        first.open()  # whoever comes first listens; the other connects
        data = b""
        while len(data) < 4:
            data += first.read()
        assert data == b"ping"
        first.write(b"pong")
        thread.join(30)
    assert got == [b"pong"]
    assert first.fifo is None


def test_no_wait_and_closed_peer(pipe_name: str) -> None:
    with Pipes(pipe_name) as p:
        with pytest.raises(PipeTimeoutError):
            p.open(pipe_wait=False)
        with pytest.raises(ValueError, match="mode"):
            p.open(mode="append")
        with pytest.raises(ValueError, match="close"):
            p.pipe = "other"  # listening already


def test_read_after_peer_closed(pipe_name: str) -> None:
    def connect_and_leave() -> None:
        with Pipes(pipe_name, timeout=30) as other:
            other.open()

    with Pipes(pipe_name, timeout=30) as a:
        t = threading.Thread(target=connect_and_leave)
        t.start()
        a.open()
        t.join()
        with pytest.raises(ConnectionClosedError):
            a.read()
