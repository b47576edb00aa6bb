"""The options of ``connect``, ``listen`` and ``serve``, sync and asyncio, in one place.

Users pass options as keywords (``npipes.connect("jobs", crc=True)``); every
front end types them with the same ``TypedDict`` (``**options:
Unpack[ConnectOptions]``) and turns them into one checked, frozen
:class:`Settings` here, so no option is declared, defaulted or validated twice.
Wrong types and impossible combinations raise at the call, before any waiting.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, TypedDict, final

from ._backend import ListenOptions as EndpointOptions
from ._frame import DEFAULT_MAX_MESSAGE_SIZE
from ._framings import Codec, get_codec
from ._names import Address, resolve
from .errors import NpipesError

if TYPE_CHECKING:
    from typing_extensions import TypeVar

    _E = TypeVar("_E", bound=BaseException)

__all__ = [
    "ConnectOptions",
    "ListenOptions",
    "Options",
    "Settings",
    "annotate",
    "check_limit",
    "connect_settings",
    "listen_settings",
]


class Options(TypedDict, total=False):
    """Options every endpoint takes (connect, listen, serve; sync and asyncio).

    Keys:
        crc: send a CRC-32 with every message and require one on every message
            received (default False).
        framing: the wire format: ``"npipes"`` (default, docs/protocol.md),
            ``"multiprocessing"``, ``"npipes1"``, ``"raw"``, ``"lines"``,
            ``"dotnet"``, or a codec object (docs/framings.md).
        max_message_size: largest message sent or accepted, in bytes (default
            1 GiB); None for no limit.
        authkey: both sides prove they know this key (the HMAC challenge of
            ``multiprocessing.connection``) before a connection is handed out.
        allow_pickle: let ``recv_pyobj`` unpickle what the peer sends (default
            False: unpickling runs code the sender chose; opt in only for a peer
            you trust, e.g. same user or ``authkey``).
        dotnet: name the pipe as .NET does, to reach a C# ``NamedPipeServerStream``
            or ``NamedPipeClientStream`` by its .NET name: on Linux/macOS the
            socket ``$TMPDIR/CoreFxPipe_NAME`` (``/tmp`` without ``TMPDIR``)
            instead of npipes' private directory; on Windows nothing changes
            (default False; docs/dotnet.md).
    """

    crc: bool
    framing: str | Codec
    max_message_size: int | None
    authkey: bytes | None
    allow_pickle: bool
    dotnet: bool


class ConnectOptions(Options, total=False):
    """:class:`Options`, plus what only a connecting side decides.

    Keys:
        wait_for_listener: if nobody listens yet, keep trying until someone
            does or the timeout passes (default False: ``PipeNotFoundError`` at once).
        allowed_uids: POSIX: user ids whose listener you accept besides your own
            (default none: a listener running as another user is refused before
            anything is sent).
        reconnect: when the listener goes away, the next send/recv/request
            connects again (waiting, with backoff, up to that call's timeout)
            instead of failing; a send that did not complete is sent again
            (at-least-once). Default False.
    """

    wait_for_listener: bool
    allowed_uids: Collection[int]
    reconnect: bool


class ListenOptions(Options, total=False):
    """:class:`Options`, plus what only a listening side decides.

    Keys:
        allow_other_users: accept peers running as other users (default False:
            the endpoint is owner-only and other uids are rejected).
        backlog: connections the OS queues until ``accept`` (POSIX; default 128).
        allow_remote: Windows: accept clients from other machines (SMB).
        allowed_users: Windows: accounts (names or SID strings) let in besides
            you and LocalSystem.
        security_descriptor: Windows: an SDDL string used instead of the
            default owner-only DACL.
    """

    allow_other_users: bool
    backlog: int
    allow_remote: bool
    allowed_users: Sequence[str]
    security_descriptor: str | None


_SHARED: Final = frozenset(Options.__annotations__)
_CONNECT: Final = _SHARED | {"wait_for_listener", "allowed_uids", "reconnect"}
_LISTEN: Final = _SHARED | {
    "allow_other_users",
    "backlog",
    "allow_remote",
    "allowed_users",
    "security_descriptor",
}


@final
@dataclass(frozen=True, slots=True)
class Settings:
    """Checked options of one endpoint, resolved once per ``connect``/``listen``."""

    name: str
    address: Address
    codec: Codec
    crc: bool = False
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE
    authkey: bytes | None = None
    allow_pickle: bool = False
    wait_for_listener: bool = False
    allowed_uids: frozenset[int] = frozenset()
    reconnect: bool = False
    subscription: bool = False  # internal: set by subscribe(), not a user option
    endpoint: EndpointOptions = field(default_factory=EndpointOptions)

    def annotate(self, exc: _E, address: str | None = None) -> _E:
        """Fill in the name and address of an npipes error (see :func:`annotate`)."""
        return annotate(exc, self.name, address or self.address.path)


def annotate(exc: _E, name: str | None, address: str | None) -> _E:
    """The one place errors get the pipe's name and address; returns ``exc``."""
    if isinstance(exc, NpipesError):
        if exc.name is None:
            exc.name = name
        if exc.address is None:
            exc.address = address
    return exc


def _check_keys(call: str, options: Mapping[str, object], allowed: frozenset[str]) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(
            f"{call}() got unexpected option(s) {', '.join(map(repr, unknown))};"
            f" it takes {', '.join(sorted(allowed))}"
        )


def _flag(options: Mapping[str, object], key: str, default: bool = False) -> bool:
    value = options.get(key, default)
    if not isinstance(value, bool):
        raise TypeError(f"{key} must be True or False, not {value!r}")
    return value


def _limit(options: Mapping[str, object]) -> int | None:
    return check_limit(options.get("max_message_size", DEFAULT_MAX_MESSAGE_SIZE))


def check_limit(value: object) -> int | None:
    """A checked ``max_message_size``: None or an int >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_message_size must be an int (bytes) or None, not {value!r}")
    if value < 0:
        raise ValueError("max_message_size must be None or >= 0 bytes")
    return value


def _common(call: str, name: str, options: Mapping[str, object]) -> dict[str, object]:
    if not isinstance(name, str):
        raise TypeError(f"the pipe name must be a str, not {type(name).__name__}")
    crc = _flag(options, "crc")
    authkey = options.get("authkey")
    framing = options.get("framing", "npipes")
    codec = get_codec(framing, crc=crc, authkey=authkey)  # type: ignore[arg-type]
    return {
        "name": name,
        "address": resolve(name, dotnet=_flag(options, "dotnet")),
        "codec": codec,
        "crc": crc,
        "max_message_size": _limit(options),
        "authkey": authkey,
        "allow_pickle": _flag(options, "allow_pickle"),
    }


def connect_settings(name: str, options: Mapping[str, object], call: str = "connect") -> Settings:
    """Check ``connect`` options; raise TypeError/ValueError at once for bad ones."""
    _check_keys(call, options, _CONNECT)
    uids = options.get("allowed_uids", ())
    if not isinstance(uids, Collection) or not all(
        isinstance(u, int) and not isinstance(u, bool) for u in uids
    ):
        raise TypeError(f"allowed_uids must be a collection of int user ids, not {uids!r}")
    return Settings(
        **_common(call, name, options),  # type: ignore[arg-type]
        wait_for_listener=_flag(options, "wait_for_listener"),
        allowed_uids=frozenset(uids),
        reconnect=_flag(options, "reconnect"),
    )


def listen_settings(name: str, options: Mapping[str, object], call: str = "listen") -> Settings:
    """Check ``listen``/``serve`` options; raise TypeError/ValueError at once for bad ones."""
    _check_keys(call, options, _LISTEN)
    backlog = options.get("backlog", 128)
    if isinstance(backlog, bool) or not isinstance(backlog, int):
        raise TypeError(f"backlog must be an int (connections), not {backlog!r}")
    if backlog < 0:
        raise ValueError(f"backlog must be an int >= 0, not {backlog!r}")
    users = options.get("allowed_users", ())
    if (
        isinstance(users, str)
        or not isinstance(users, Sequence)
        or not all(isinstance(u, str) for u in users)
    ):
        raise TypeError(f"allowed_users must be a sequence of str, not {users!r}")
    sddl = options.get("security_descriptor")
    if sddl is not None and not isinstance(sddl, str):
        raise TypeError(f"security_descriptor must be an SDDL str or None, not {sddl!r}")
    endpoint = EndpointOptions(
        allow_other_users=_flag(options, "allow_other_users"),
        backlog=backlog,
        allow_remote=_flag(options, "allow_remote"),
        allowed_users=tuple(users),
        security_descriptor=sddl,
    )
    return Settings(**_common(call, name, options), endpoint=endpoint)  # type: ignore[arg-type]
