"""Sans-I/O multi-step exchanges: the ``authkey`` handshake.

The handshake is CPython ``multiprocessing.connection``'s, byte for byte, so
npipes and a stdlib ``Client``/``Listener`` authenticate each other: the side
that accepts delivers a challenge (``#CHALLENGE#{sha256}`` + 40 random bytes),
the other answers with an HMAC of the whole challenge (``{sha256}`` + MAC, or a
raw HMAC-MD5 for a legacy pre-3.12 peer), gets ``#WELCOME#`` or ``#FAILURE#``,
and then the roles swap. Each step is a generator that yields a message to
send (``bytes``) or ``None`` to receive one, so the sync and asyncio front ends
drive the same code.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Generator
from typing import Final

from .errors import AuthenticationError

__all__ = ["Exchange", "accept_side", "connect_side"]

CHALLENGE: Final = b"#CHALLENGE#"
WELCOME: Final = b"#WELCOME#"
FAILURE: Final = b"#FAILURE#"
_RANDOM_LENGTH: Final = 40
_LEGACY_LENGTHS: Final = (20, 16)  # pre-3.12 challenge; raw HMAC-MD5 response
_ALLOWED_DIGESTS: Final = frozenset({b"md5", b"sha256", b"sha384", b"sha3_256", b"sha3_384"})
MAX_HANDSHAKE_MESSAGE: Final = 256

# Yields a message to send, or None to receive; is sent the received message.
Exchange = Generator[bytes | None, bytes | None, None]


def _digest_and_payload(message: bytes) -> tuple[str, bytes]:
    if len(message) in _LEGACY_LENGTHS:
        return "", message
    if message.startswith(b"{"):
        curly = message.find(b"}", 1, max(map(len, _ALLOWED_DIGESTS)) + 2)
        if curly > 0 and message[1:curly] in _ALLOWED_DIGESTS:
            return message[1:curly].decode("ascii"), message[curly + 1 :]
    raise AuthenticationError("authentication failed: unsupported digest or message length")


def _response(authkey: bytes, challenge: bytes) -> bytes:
    digest, _ = _digest_and_payload(challenge)
    if not digest:
        return hmac.new(authkey, challenge, "md5").digest()  # legacy peer
    mac = hmac.new(authkey, challenge, digest).digest()  # the MAC covers the {digest} prefix
    return b"{%s}%s" % (digest.encode("ascii"), mac)


def _verify(authkey: bytes, challenge: bytes, response: bytes) -> None:
    digest, mac = _digest_and_payload(response)
    expected = hmac.new(authkey, challenge, digest or "md5").digest()
    if len(expected) != len(mac) or not hmac.compare_digest(expected, mac):
        raise AuthenticationError("authentication failed: the peer's authkey does not match")


def _received(message: bytes | None) -> bytes:
    assert message is not None  # the driver sends a message after each None
    return message


def deliver_challenge(authkey: bytes) -> Exchange:
    challenge = b"{sha256}" + os.urandom(_RANDOM_LENGTH)
    yield CHALLENGE + challenge
    response = _received((yield None))
    try:
        _verify(authkey, challenge, response)
    except AuthenticationError:
        yield FAILURE
        raise
    yield WELCOME


def answer_challenge(authkey: bytes) -> Exchange:
    message = _received((yield None))
    if not message.startswith(CHALLENGE):
        raise AuthenticationError("authentication failed: the peer sent no challenge")
    challenge = message[len(CHALLENGE) :]
    if len(challenge) < 20:
        raise AuthenticationError("authentication failed: the challenge is too short")
    yield _response(authkey, challenge)
    if _received((yield None)) != WELCOME:
        raise AuthenticationError("authentication failed: the peer rejected our authkey")


def accept_side(authkey: bytes) -> Exchange:
    """The listener's half (multiprocessing ``Listener.accept`` order)."""
    _check_key(authkey)
    yield from deliver_challenge(authkey)
    yield from answer_challenge(authkey)


def connect_side(authkey: bytes) -> Exchange:
    """The client's half (multiprocessing ``Client`` order)."""
    _check_key(authkey)
    yield from answer_challenge(authkey)
    yield from deliver_challenge(authkey)


def _check_key(authkey: bytes) -> None:
    if not isinstance(authkey, bytes):
        raise TypeError(f"authkey must be bytes, not {type(authkey).__name__}")
