"""The bridge's ZeroMQ-side wire layout and endpoint rules; pure, no I/O.

Every ZeroMQ message between two bridges has two frames::

    frame 0: header, 24 bytes, network byte order
        version  u8   1
        kind     u8   1 TEXT (payload is UTF-8), 2 BINARY, 3 ACK
        reserved u16  0
        crc      u32  CRC-32/ISO-HDLC of frame 1 (DATA); 0 for ACK
        session  8 s  DATA: the sending bridge's session id (random per start);
                      ACK: the session id of the bridge whose data is acknowledged
        seq      u64  DATA: 1, 2, 3 ... per session; ACK: every seq up to this one
                      was delivered (or dropped as corrupt) on the far side
    frame 1: the payload (empty for ACK)

An ACK returns byte credit to the sender (see npipes.bridge).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final, final

from .errors import NpipesError

__all__ = [
    "ACK",
    "BINARY",
    "HEADER",
    "TEXT",
    "VERSION",
    "Header",
    "InsecureEndpointError",
    "check_endpoint",
    "is_loopback",
    "pack",
    "unpack",
]

VERSION: Final = 1
TEXT: Final = 1
BINARY: Final = 2
ACK: Final = 3
HEADER: Final = struct.Struct("!BBHI8sQ")


@final
@dataclass(frozen=True, slots=True)
class Header:
    """A decoded header frame."""

    kind: int
    crc: int
    session: bytes
    seq: int


def pack(kind: int, crc: int, session: bytes, seq: int) -> bytes:
    """The header frame for these fields."""
    return HEADER.pack(VERSION, kind, 0, crc, session, seq)


def unpack(frame: bytes) -> Header | None:
    """Decode a header frame; None if it is not one this version understands."""
    if len(frame) != HEADER.size:
        return None
    version, kind, _reserved, crc, session, seq = HEADER.unpack(frame)
    if version != VERSION or kind not in (TEXT, BINARY, ACK):
        return None
    return Header(kind, crc, session, seq)


class InsecureEndpointError(NpipesError, ValueError):
    """A bridge was asked to use an off-host ZeroMQ endpoint without CurveZMQ.

    Plain TCP off the host lets anyone on the network read and inject
    messages: turn on Curve (``--curve-secret-key``) or pass ``--insecure``.
    """


def is_loopback(endpoint: str) -> bool:
    """Whether ``endpoint`` stays on this host: ``ipc://`` (a file path, not the
    abstract ``ipc://@NAME``, which any local user can reach), ``inproc://``, or
    ``tcp://`` to/on a loopback address (127.0.0.0/8, ::1, ``localhost``).

    A wildcard (``tcp://*:5555``), an interface name or any other host name
    counts as off-host: it may be reachable from the network.
    """
    transport, sep, rest = endpoint.partition("://")
    if not sep:
        return False
    transport = transport.lower()
    if transport == "ipc" and rest.startswith("@"):
        return False  # Linux's abstract namespace: no file, no permissions, any user
    if transport in ("ipc", "inproc"):
        return True
    if transport != "tcp":
        return False
    # tcp://[source;]host:port: every address named must be loopback.
    for part in rest.split(";"):
        host, colon, _port = part.rpartition(":")
        if not colon:
            return False
        host = host.strip("[]")
        if host.lower() == "localhost":
            continue
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return False
        except ValueError:
            return False
    return True


def check_endpoint(endpoint: str, *, curve: bool, insecure: bool) -> None:
    """Refuse an off-host endpoint without Curve unless ``insecure``.

    Raises:
        InsecureEndpointError: ``endpoint`` is off-host, Curve is off and
            ``insecure`` is False.
    """
    if curve or insecure or is_loopback(endpoint):
        return
    raise InsecureEndpointError(
        f"refusing plain ZeroMQ on {endpoint!r}: it is not a loopback address, so"
        " anyone on the network could read and inject messages; turn on CurveZMQ"
        " (--curve-secret-key with --curve-server-key or --curve-clients) or pass"
        " --insecure"
    )
