"""The bridge's rules in process (tests/test_bridge14*.py run real bridges as
subprocesses): option checks, Curve files, and what the receiving side does with a
far bridge's messages (a restart, a gap, a bad CRC, text that is not UTF-8, an ack of
an earlier run)."""

from __future__ import annotations

import socket
import zlib
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("zmq")
pytestmark = pytest.mark.posix  # the bridge is tested on Linux (issue 14)

from npipes import _bridge_wire as wire  # noqa: E402
from npipes import bridge  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({}, "exactly one"),
        ({"zmq_bind": "tcp://127.0.0.1:1", "zmq_connect": "tcp://127.0.0.1:1"}, "exactly one"),
        ({"zmq_bind": "tcp://127.0.0.1:1", "curve_clients": "x"}, "need --curve-secret-key"),
        (
            {
                "zmq_bind": "tcp://127.0.0.1:1",
                "curve_secret_key": "k",
                "curve_clients": "d",
                "curve_server_key": "s",
            },
            "is for --zmq-connect",
        ),
        (
            {
                "zmq_connect": "tcp://127.0.0.1:1",
                "curve_secret_key": "k",
                "curve_server_key": "s",
                "curve_clients": "d",
            },
            "is for --zmq-bind",
        ),
        ({"zmq_bind": "tcp://127.0.0.1:1", "max_queue_bytes": 0}, "at least 1"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        bridge.Bridge("unused", **kwargs)


def test_curve_files_are_checked(tmp_path: Path) -> None:
    import zmq.auth

    public, secret = zmq.auth.create_certificates(str(tmp_path), "b")
    with pytest.raises(ValueError, match="holds no secret key"):
        bridge._load_keys(public, None, None)
    with pytest.raises(ValueError, match="is not a directory"):
        bridge._load_keys(secret, None, str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="cannot read"):
        bridge._load_keys(str(tmp_path / "missing"), None, None)
    keys = bridge._load_keys(secret, public, None)
    assert keys is not None
    assert keys[2] is not None


def _frames(kind: int, session: bytes, seq: int, payload: bytes, crc: int | None = None) -> Any:
    return wire.pack(kind, zlib.crc32(payload) if crc is None else crc, session, seq), payload


def test_the_receiving_side_counts_restarts_gaps_and_bad_messages(tmp_path: Path) -> None:
    with bridge.Bridge(str(tmp_path / "b.sock"), zmq_bind=f"tcp://127.0.0.1:{_port()}") as b:
        a1, a2 = b"A" * 16, b"B" * 16
        header, payload = _frames(wire.TEXT, a1, 1, b"one")
        b._incoming(wire.unpack(header), payload)
        header, payload = _frames(wire.TEXT, a1, 4, b"four")  # 2 and 3 lost in the link
        b._incoming(wire.unpack(header), payload)
        assert b.stats.lost == 2
        header, payload = _frames(wire.BINARY, a1, 5, b"bad", crc=1)
        b._incoming(wire.unpack(header), payload)
        header, payload = _frames(wire.TEXT, a1, 6, b"\xff\xfe")
        b._incoming(wire.unpack(header), payload)
        assert b.stats.corrupt == 2
        header, payload = _frames(wire.TEXT, a2, 1, b"after a restart")  # a new session
        b._incoming(wire.unpack(header), payload)
        assert b.stats.lost == 2
        b._acknowledged(a1, 1)  # an ack for another run of this bridge: ignored
        delivered = [item.message for item in b._inbox if item.message is not None]
        assert delivered == ["one", "four", "after a restart"]


def test_a_bad_endpoint_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bad ZeroMQ endpoint"):
        bridge.Bridge(str(tmp_path / "b.sock"), zmq_bind="tcp://127.0.0.1:notaport")


def test_malformed_messages_are_dropped_and_a_full_inbox_stops_reading(tmp_path: Path) -> None:
    import time

    import zmq

    endpoint = f"tcp://127.0.0.1:{_port()}"
    with bridge.Bridge(str(tmp_path / "b.sock"), zmq_bind=endpoint, max_queue_bytes=1) as b:
        ctx = zmq.Context.instance()
        peer = ctx.socket(zmq.DEALER)
        peer.setsockopt(zmq.LINGER, 0)
        try:
            peer.connect(endpoint)
            peer.send_multipart([b"one frame only"])
            deadline = time.monotonic() + 10
            while b.stats.corrupt == 0 and time.monotonic() < deadline:
                b._receive()
                time.sleep(0.01)
            assert b.stats.corrupt == 1
            # Two messages past a 1-byte window: the next read stops before taking more.
            for seq in (1, 2):
                header, payload = _frames(wire.BINARY, b"C" * 16, seq, b"xy")
                b._incoming(wire.unpack(header), payload)
            peer.send_multipart([b"another", b"bad"])
            time.sleep(0.2)
            b._receive()
            assert b.stats.corrupt == 1  # not read: the inbox is a window full
        finally:
            peer.close()
