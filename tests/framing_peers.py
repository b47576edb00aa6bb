"""Peer programs for tests/test_framings.py: module-level functions run by ``helpers.start``.

Each runs in a fresh (spawned) Python process. The ``stdlib_*`` peers use
nothing but CPython's ``multiprocessing.connection`` (the reference that the
``multiprocessing`` framing must match byte for byte); the others use npipes
the way an independent program would. A peer reports failure by raising
(non-zero exit code, traceback on stderr); a watchdog ends a peer that would
block past its budget, so a broken handshake can never hang the test run.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from multiprocessing.connection import Client, Listener
from typing import Any

import npipes

WAIT = 30.0
"""Seconds any single blocking step of a peer may take."""

NPIPES1_HELLO = bytes.fromhex("0000000d0000000548656c6c6ff7d18982")
"""npipes 1.x ``send_message('Hello', crc=True)``, byte for byte."""


def _watchdog(seconds: float = 3 * WAIT) -> None:
    """End this process (exit code 99) if it is still running after ``seconds``.

    ``multiprocessing.connection`` has no timeouts: this bounds its blocking calls.
    """
    timer = threading.Timer(seconds, os._exit, args=(99,))
    timer.daemon = True
    timer.start()


def pattern(size: int) -> bytes:
    """``size`` deterministic bytes (a 251-byte cycle, so no power-of-two alignment hides)."""
    block = bytes(range(251))
    return (block * (size // len(block) + 1))[:size]


def _echo(conn: Any, sizes: list[int], *, empty_then_done: bool) -> None:
    """Check that message ``i`` is ``pattern(sizes[i])``, send it back; then say ``done``."""
    for size in sizes:
        data = conn.recv_bytes()
        assert data == pattern(size), f"expected {size} bytes, got {len(data)}"
        conn.send_bytes(data)
    if empty_then_done:
        conn.send_bytes(b"")  # a zero-length pipe message on Windows
    conn.send_bytes(b"done")
    # Wait until npipes closes its end, so nothing is torn down under it.
    try:
        conn.recv_bytes()
    except EOFError:
        return
    raise AssertionError("npipes sent more than expected")


# -- stdlib multiprocessing.connection peers ---------------------------------------


def stdlib_client(
    address: str,
    family: str,
    authkey: bytes | None,
    sizes: list[int],
    expect_auth_failure: bool = False,
    empty_then_done: bool = False,
) -> None:
    """``multiprocessing.connection.Client`` against an npipes listener."""
    _watchdog()
    if expect_auth_failure:
        try:
            conn = Client(address, family, authkey=authkey)
        except multiprocessing.AuthenticationError:
            return
        conn.close()
        raise AssertionError("the stdlib Client authenticated with a wrong key")
    with Client(address, family, authkey=authkey) as conn:
        _echo(conn, sizes, empty_then_done=empty_then_done)


def stdlib_listener(
    address: str,
    family: str,
    authkey: bytes | None,
    sizes: list[int],
    expect_auth_failure: bool = False,
) -> None:
    """``multiprocessing.connection.Listener`` that npipes connects to; one client."""
    _watchdog()
    with Listener(address, family, authkey=authkey) as listener:
        if expect_auth_failure:
            try:
                conn = listener.accept()
            except multiprocessing.AuthenticationError:
                return
            conn.close()
            raise AssertionError("the stdlib Listener authenticated a wrong key")
        with listener.accept() as conn:
            _echo(conn, sizes, empty_then_done=False)


# -- npipes peers ----------------------------------------------------------------------


def npipes_auth_client(name: str, authkey: bytes, expect_auth_failure: bool) -> None:
    """Connect with ``authkey`` (default framing); echo one message, or expect rejection."""
    _watchdog()
    try:
        conn = npipes.connect(name, authkey=authkey, timeout=WAIT, wait_for_listener=True)
    except npipes.AuthenticationError:
        if expect_auth_failure:
            return
        raise
    with conn:
        assert not expect_auth_failure, "authenticated with a wrong key"
        conn.send(conn.recv(timeout=WAIT), timeout=WAIT)
        try:
            conn.recv(timeout=WAIT)
        except npipes.ConnectionClosedError:
            return


def npipes1_senders(name: str, how: list[str]) -> None:
    """One short-lived npipes 1.x-style sender per entry: connect, write one frame, close.

    ``"vector"``: the exact bytes of 1.x ``send_message('Hello', crc=True)``
    (written with ``framing="raw"``, so no npipes encoder is involved);
    any other text: that text through ``framing="npipes1"``, with a CRC-32
    when it starts with ``crc:``.
    """
    _watchdog()
    for text in how:
        if text == "vector":
            with npipes.connect(name, framing="raw", timeout=WAIT, wait_for_listener=True) as conn:
                conn.send(NPIPES1_HELLO, timeout=WAIT)
            continue
        with npipes.connect(name, framing="npipes1", timeout=WAIT, wait_for_listener=True) as conn:
            conn.send(text, crc=text.startswith("crc:"), timeout=WAIT)
