"""``npipes bridge`` between two pretend hosts on the loopback interface.

Each "host" is a private endpoint directory (XDG_RUNTIME_DIR); the two local
programs are plain npipes programs (tests/bridge14_peers.py) that know nothing
of the bridge; the bridges, the programs and a man in the middle are real
processes. Linux only (the bridge's tests; pyzmq from the ``bridge`` extra).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

if sys.platform != "win32":  # the bridge is tested on Linux (pyzmq: the dev extra)
    pytest.importorskip("zmq", reason="the bridge needs pyzmq (pip install 'npipes[bridge]')")

from bridge14_peers import index_of, message
from bridge14_procs import Proc, Procs, bridge, free_port, host_dir, peer

pytestmark = pytest.mark.posix


@pytest.fixture
def procs() -> Iterator[Procs]:
    all_procs = Procs()
    yield all_procs
    all_procs.cleanup()


@pytest.fixture
def hosts(tmp_path: Path) -> tuple[Path, Path]:
    return host_dir(tmp_path, "h1"), host_dir(tmp_path, "h2")


def _link(
    procs: Procs,
    hosts: tuple[Path, Path],
    name: str,
    *extra1: str,
    port: int | None = None,
    extra2: tuple[str, ...] = (),
    near_binds: bool = False,
) -> tuple[int, Proc, Proc]:
    """Bridge 1 listens on ``name`` on host 1, bridge 2 connects to the listener
    ``name`` on host 2; bridge 2 binds the ZeroMQ link and bridge 1 connects it
    (the other way round with ``near_binds``)."""
    port = port or free_port()
    link = f"tcp://127.0.0.1:{port}"
    bind, connect = (
        ("--zmq-connect", "--zmq-bind") if near_binds else ("--zmq-bind", "--zmq-connect")
    )
    b2 = procs.add(bridge(hosts[1], "--name", name, "--connect", bind, link, *extra2))
    b1 = procs.add(bridge(hosts[0], "--name", name, connect, link, *extra1))
    return port, b1, b2


def test_order_and_types_both_ways(procs: Procs, hosts: tuple[Path, Path], pipe_name: str) -> None:
    """Text stays str, binary stays bytes (empty ones, every byte value, 1 MiB),
    in order, both ways: the far program echoes each message back."""
    receiver = procs.add(peer(hosts[1], "receiver", pipe_name, "echo"))
    assert receiver.next_json() == {"ready": True}
    _link(procs, hosts, pipe_name)
    sender = procs.add(peer(hosts[0], "sender", pipe_name, "echo"))
    assert sender.until(lambda o: "echoed" in o or "mismatch" in o) == {"echoed": 305}
    got = [receiver.next_json() for _ in range(305)]
    assert got[0] == {"accepted": True}
    got = [*got[1:], receiver.next_json()]
    assert [g["type"] for g in got[:300]] == ["str" if i % 2 == 0 else "bytes" for i in range(300)]
    assert [g["value"] for g in got[:4]] == [
        message(0),
        message(1).hex(),  # type: ignore[union-attr]
        message(2),
        message(3).hex(),  # type: ignore[union-attr]
    ]
    assert got[300] == {"type": "str", "value": ""}
    assert got[301] == {"type": "bytes", "value": ""}
    assert sender.wait() == 0
    assert receiver.until(lambda o: "end" in o) == {"end": True}


def test_local_crc_on_both_hosts(procs: Procs, hosts: tuple[Path, Path], pipe_name: str) -> None:
    """--crc: each local hop carries its own CRC-32 too (the programs use crc=True)."""
    receiver = procs.add(peer(hosts[1], "receiver", pipe_name, "echo-crc"))
    assert receiver.next_json() == {"ready": True}
    _link(procs, hosts, pipe_name, "--crc", extra2=("--crc",))
    sender = procs.add(peer(hosts[0], "sender", pipe_name, "echo-crc"))
    assert sender.until(lambda o: "echoed" in o or "mismatch" in o) == {"echoed": 305}
    assert sender.wait() == 0


def test_corruption_on_the_wire_is_detected_and_not_delivered(
    procs: Procs, hosts: tuple[Path, Path], pipe_name: str
) -> None:
    """A man in the middle flips a payload byte of two messages: the receiving
    bridge's CRC check drops both (logged, counted); the others arrive in order."""
    inner, outer = free_port(), free_port()
    receiver = procs.add(peer(hosts[1], "receiver", pipe_name, "plain"))
    assert receiver.next_json() == {"ready": True}
    b2 = procs.add(
        bridge(hosts[1], "--name", pipe_name, "--connect", "--zmq-bind", f"tcp://127.0.0.1:{inner}")
    )
    mitm = procs.add(peer(hosts[0], "mitm", f"tcp://127.0.0.1:{outer}", f"tcp://127.0.0.1:{inner}"))
    assert mitm.next_json() == {"ready": True}
    procs.add(bridge(hosts[0], "--name", pipe_name, "--zmq-connect", f"tcp://127.0.0.1:{outer}"))
    sender = procs.add(peer(hosts[0], "sender", pipe_name, "corrupt"))
    assert sender.until(lambda o: "done" in o) == {"done": True}
    got = []
    while "end" not in (obj := receiver.next_json()):
        if "type" in obj:
            got.append(obj)
    expected = [i for i in range(20) if i not in (7, 12)]
    assert [
        index_of(g["value"] if g["type"] == "str" else bytes.fromhex(g["value"])) for g in got
    ] == (expected)
    assert not any("CORRUPT" in g["value"] for g in got if g["type"] == "str")
    b2.wait_err("checksum mismatch", count=2)
    assert b2.terminate() == 0
    assert "2 corrupt dropped" in b2.stderr


def test_bridge_restarted_mid_stream_resumes(
    procs: Procs, hosts: tuple[Path, Path], pipe_name: str
) -> None:
    """Kill -9 the far bridge while messages flow, start it again: the link
    resumes by itself. What arrives is in order with no duplicates; what was in
    flight in the killed bridge may be missing (a gap, never a reorder)."""
    receiver = procs.add(peer(hosts[1], "receiver", pipe_name, "quiet"))
    assert receiver.next_json() == {"ready": True}
    port, b1, b2 = _link(procs, hosts, pipe_name)
    sender = procs.add(peer(hosts[0], "sender", pipe_name, "paced", stdin=True))
    assert receiver.next_json() == {"accepted": True}
    seen: list[int] = []
    while len(seen) < 100:
        seen.append(receiver.next_json()["i"])
    b2.kill()
    while "closed" not in (obj := receiver.next_json()):
        seen.append(obj["i"])
    before = len(seen)
    procs.add(
        bridge(hosts[1], "--name", pipe_name, "--connect", "--zmq-bind", f"tcp://127.0.0.1:{port}")
    )
    assert receiver.next_json() == {"accepted": True}
    while len(seen) < before + 100:
        seen.append(receiver.next_json()["i"])
    sender.write("stop")
    sent = sender.until(lambda o: "sent" in o)["sent"]
    while "end" not in (obj := receiver.next_json()):
        seen.append(obj["i"])
    assert sender.wait() == 0
    assert seen == sorted(set(seen)), "reordered or duplicated"
    assert seen[-1] == sent - 1, "the stream's tail after the restart arrived"
    b1.wait_err("link down")


def test_near_bridge_restarted_and_a_reconnecting_client(
    procs: Procs, hosts: tuple[Path, Path], pipe_name: str
) -> None:
    """Kill -9 the bridge the sender is connected to (it listens on the name):
    started again, it takes the name back (the stale socket file), the sender's
    ``reconnect=True`` connection reconnects, the link resumes; in order, no
    duplicates."""
    receiver = procs.add(peer(hosts[1], "receiver", pipe_name, "quiet"))
    assert receiver.next_json() == {"ready": True}
    port, b1, b2 = _link(procs, hosts, pipe_name)
    sender = procs.add(peer(hosts[0], "sender", pipe_name, "paced-reconnect", stdin=True))
    assert receiver.next_json() == {"accepted": True}
    seen: list[int] = []
    while len(seen) < 100:
        seen.append(receiver.next_json()["i"])
    b1.kill()
    b2.wait_err("link down")
    procs.add(bridge(hosts[0], "--name", pipe_name, "--zmq-connect", f"tcp://127.0.0.1:{port}"))
    before = len(seen)
    while len(seen) < before + 100:
        seen.append(receiver.next_json()["i"])
    sender.write("stop")
    report = sender.until(lambda o: "sent" in o)
    while "end" not in (obj := receiver.next_json()):
        seen.append(obj["i"])
    assert sender.wait() == 0
    assert report["reconnects"] >= 1
    assert seen == sorted(set(seen)), "reordered or duplicated"
    assert seen[-1] == report["sent"] - 1


def _wait_until_held_back(sender: Proc, sent: int) -> int:
    """The sender's message count once it made no progress for 5 s."""
    while True:
        try:
            obj = sender.next_json(timeout=5)
        except AssertionError:
            return sent  # no progress for 5 s: held back
        assert "done" not in obj, "the sender was never held back: nothing bounds the bridges"
        sent = obj["sent"]


@pytest.mark.slow
@pytest.mark.parametrize("scanned", [False, True], ids=["plain", "port-scanned"])
def test_backpressure_is_bounded_in_bytes(
    procs: Procs, hosts: tuple[Path, Path], pipe_name: str, scanned: bool
) -> None:
    """The far program reads nothing: the bridges hold at most --max-queue-bytes
    in flight, the local sender blocks, memory stays bounded; once the far
    program reads, every message arrives in order. ``port-scanned``: the
    sending bridge binds, and connections that open and close on its port
    without a ZeroMQ handshake do not reset its window."""
    budget = 1 << 20
    count = 1024  # 64 MiB of 64 KiB messages, far above the budget
    receiver = procs.add(peer(hosts[1], "receiver", pipe_name, "quiet-hold", stdin=True))
    assert receiver.next_json() == {"ready": True}
    port, b1, b2 = _link(
        procs,
        hosts,
        pipe_name,
        "--max-queue-bytes",
        str(budget),
        extra2=("--max-queue-bytes", str(budget)),
        near_binds=scanned,
    )
    rss = {b: b.rss() for b in (b1, b2)}
    sender = procs.add(peer(hosts[0], "sender", pipe_name, f"flood:{count}"))
    assert receiver.next_json() == {"accepted": True}
    # Wait for the window to fill, then for the sender to stop making progress.
    sent = sender.until(lambda o: o.get("sent", 0) * 65536 >= budget)["sent"]
    sent = _wait_until_held_back(sender, sent)
    if scanned:
        before = sent
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as probe:
                probe.sendall(b"GET / HTTP/1.0\r\n\r\n")
        sent = _wait_until_held_back(sender, sent)
        assert sent - before <= 1, (before, sent, b1.stderr)
    # Kernel buffers of the two local Unix-socket hops hold some more.
    local_slack = 4 << 20
    assert sent * 65536 <= budget + 2 * 65536 + local_slack, sent
    assert sent < count
    for b, before in rss.items():
        assert b.rss() - before < 24 << 20, "bridge memory grew past its bound"
    receiver.write("go")
    got = []
    while "end" not in (obj := receiver.next_json()):
        got.append(obj["i"])
    assert got == list(range(count))
    assert sender.wait() == 0


def test_a_bridge_connected_to_itself_drops_its_own_messages(
    procs: Procs, hosts: tuple[Path, Path], pipe_name: str
) -> None:
    """A TCP connect to a loopback port nobody listens on can connect to itself
    (simultaneous open; forced here with source port = destination port): the
    bridge sees its own session come back, says so, reconnects, and never hands
    its local program its own messages."""
    port = free_port()
    b = procs.add(
        bridge(
            hosts[0],
            "--name",
            pipe_name,
            "--zmq-connect",
            f"tcp://127.0.0.1:{port};127.0.0.1:{port}",
        )
    )
    b.wait_err("link up")
    echo = procs.add(peer(hosts[0], "sender", pipe_name, "corrupt"))
    assert echo.until(lambda o: "done" in o) == {"done": True}
    b.wait_err("connected to itself")
    assert b.terminate() == 0
    assert "0 delivered" in b.stderr
