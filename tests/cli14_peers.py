"""Plain npipes programs the ``npipes`` command talks to in tests/test_cli14*.py.

Run as a script: ``python tests/cli14_peers.py COMMAND NAME ARGS...``. Each
prints ``ready`` on stdout once it listens. Messages on the command line are
text, or bytes when written ``hex:0061ff``.
"""

from __future__ import annotations

import contextlib
import json
import sys

import npipes
from npipes._frame import encode_frame


def _message(arg: str) -> bytes | str:
    return bytes.fromhex(arg[4:]) if arg.startswith("hex:") else arg


def _ready() -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()


def _wait_for_close(conn: npipes.Connection) -> None:
    with contextlib.suppress(npipes.ConnectionClosedError, npipes.PipeTimeoutError):
        conn.recv(timeout=60)


def listen_send(name: str, *messages: str) -> None:
    """Listen, accept one client, send ``messages``, wait for it to close."""
    with npipes.listen(name) as listener:
        _ready()
        with listener.accept(timeout=60) as conn:
            for arg in messages:
                conn.send(_message(arg))
            _wait_for_close(conn)


def listen_bad_crc(name: str, text: str) -> None:
    """Send one frame whose CRC-32 is wrong (its last byte flipped), over the raw framing."""
    frame = bytearray(encode_frame(text.encode("utf-8"), crc=True))
    frame[-1] ^= 0xFF
    with npipes.listen(name, framing="raw") as listener:
        _ready()
        with listener.accept(timeout=60) as conn:
            conn.send(bytes(frame))
            _wait_for_close(conn)


def listen_recv(name: str, count: str) -> None:
    """Listen, accept one client, print each of ``count`` messages as a JSON line."""
    with npipes.listen(name) as listener:
        _ready()
        with listener.accept(timeout=60) as conn:
            for _ in range(int(count)):
                message = conn.recv(timeout=60)
                record = {"text": message} if isinstance(message, str) else {"hex": message.hex()}
                sys.stdout.write(json.dumps(record) + "\n")
                sys.stdout.flush()


def listen_die(name: str) -> None:
    """Listen, say ready, then wait for stdin to close (the test kills it to leave a stale file)."""
    with npipes.listen(name):
        _ready()
        sys.stdin.read()


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    {
        "listen_send": listen_send,
        "listen_bad_crc": listen_bad_crc,
        "listen_recv": listen_recv,
        "listen_die": listen_die,
    }[command](*rest)
