"""Peer programs for tests/test_bridge14*.py: plain npipes programs (they know
nothing of the bridge) and a ZeroMQ man in the middle. Run as
``python -m bridge14_peers ROLE NAME [args]``; the endpoint directory comes
from ``XDG_RUNTIME_DIR`` (one private directory per pretend host)."""

from __future__ import annotations

import json
import sys
import threading
import time

import npipes


def _out(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def message(i: int) -> str | bytes:
    """Message ``i`` of a stream: text for even ``i``, binary (every byte value) for odd."""
    if i % 2 == 0:
        return f"m{i} é✓"
    return i.to_bytes(4, "big") + bytes(range(256))


def index_of(msg: str | bytes) -> int:
    if isinstance(msg, str):
        return int(msg.split()[0][1:])
    return int.from_bytes(msg[:4], "big")


def receiver(name: str, mode: str) -> None:
    """Listen on ``name``; accept again whenever a connection ends (a restarted
    bridge); report each message as a JSON line until ``END``.

    mode ``echo``: send each message back. ``hold``: after the first accept, read
    nothing until a line arrives on stdin.
    """
    crc = "crc" in mode
    with npipes.listen(name, crc=crc) as listener:
        _out({"ready": True})
        held = "hold" in mode
        while True:
            with listener.accept(timeout=60) as conn:
                _out({"accepted": True})
                if held:
                    sys.stdin.readline()
                    held = False
                while True:
                    try:
                        msg = conn.recv(timeout=60)
                    except npipes.ConnectionClosedError:
                        _out({"closed": True})
                        break
                    if msg == "END":
                        _out({"end": True})
                        return
                    if "echo" in mode:
                        conn.send(msg)
                    if "quiet" in mode:
                        _out({"i": index_of(msg), "n": len(msg)})
                    else:
                        _out(
                            {
                                "type": type(msg).__name__,
                                "value": msg if isinstance(msg, str) else msg.hex(),
                            }
                        )


def sender(name: str, mode: str) -> None:
    """Connect to ``name`` and send a stream (see each mode), then ``END``."""
    crc = "crc" in mode
    reconnect = "reconnect" in mode
    with npipes.connect(
        name, timeout=60, wait_for_listener=True, crc=crc, reconnect=reconnect
    ) as conn:
        _out({"connected": True})
        if mode.startswith("echo"):
            # Order and types both ways: every message comes back as sent.
            messages: list[str | bytes] = [message(i) for i in range(300)]
            messages += ["", b"", "x" * 100_000, bytes(1 << 20), "CORRUPT? no: plain text"]
            for msg in messages:
                conn.send(msg)
            for msg in messages:
                back = conn.recv(timeout=60)
                if back != msg or type(back) is not type(msg):
                    _out({"mismatch": repr(msg)[:80], "got": repr(back)[:80]})
                    sys.exit(1)
            _out({"echoed": len(messages)})
        elif mode.startswith("corrupt"):
            for i in range(20):
                if i == 7:
                    conn.send("m7 CORRUPT")
                elif i == 12:
                    conn.send(b"\x00\x00\x00\x0cCORRUPT")
                else:
                    conn.send(message(i))
        elif mode.startswith("paced"):
            # Until "stop" on stdin: one message a millisecond (a restart happens meanwhile).
            stop = threading.Event()
            threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
            i = 0
            while not stop.is_set():
                conn.send(message(i), timeout=60 if reconnect else None)
                i += 1
                time.sleep(0.001)
            _out({"sent": i, "reconnects": conn.reconnects})
        elif mode.startswith("flood"):
            # 64 KiB messages; a line per message so the test sees where it blocks.
            chunk = bytes(65536 - 4)
            for i in range(int(mode.split(":")[1])):
                conn.send(i.to_bytes(4, "big") + chunk)
                _out({"sent": i + 1})
        conn.send("END")
        _out({"done": True})


def mitm(listen_at: str, forward_to: str) -> None:
    """Relay ZeroMQ messages between two bridges, flipping a byte in every data
    payload that contains ``CORRUPT`` (the header, and its CRC, are left alone)."""
    import zmq

    ctx = zmq.Context()
    front = ctx.socket(zmq.DEALER)
    front.bind(listen_at)
    back = ctx.socket(zmq.DEALER)
    back.connect(forward_to)
    poller = zmq.Poller()
    poller.register(front, zmq.POLLIN)
    poller.register(back, zmq.POLLIN)
    _out({"ready": True})
    while True:
        for sock, _ in poller.poll():
            frames = sock.recv_multipart()
            if len(frames) == 2 and b"CORRUPT" in frames[1]:
                payload = bytearray(frames[1])
                payload[-1] ^= 0x01
                frames[1] = bytes(payload)
                sys.stderr.write("mitm: flipped a byte\n")
            (back if sock is front else front).send_multipart(frames)


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "receiver":
        receiver(sys.argv[2], sys.argv[3])
    elif role == "sender":
        sender(sys.argv[2], sys.argv[3])
    elif role == "mitm":
        mitm(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(f"unknown role {role!r}")
