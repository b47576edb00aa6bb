"""Windows backend, security half: DACLs, SIDs and the per-name claim.

The I/O half (``windows.py``) creates and drives pipes; this module only says
who may open them and makes sure one npipes listener owns a name.
"""

from __future__ import annotations

import ctypes
import hashlib
import sys
from typing import TYPE_CHECKING, Any, Final

import pywintypes
import win32api
import win32con
import win32event
import win32security
import winerror

from npipes.errors import PipeInUseError, PipePermissionError, translate_winerror

if TYPE_CHECKING:
    from ._base import ListenOptions

assert sys.platform == "win32" or not TYPE_CHECKING

__all__ = [
    "claim_name",
    "current_user_sid",
    "listener_security",
    "os_upcase",
    "security_descriptor_sddl",
    "semaphore_name",
]

_SEMAPHORE_PREFIX: Final = "Local\\npipes-listener-"
_PIPE_PREFIX: Final = "\\\\.\\pipe\\"

_ntdll = ctypes.WinDLL("ntdll")
_RtlUpcaseUnicodeChar = _ntdll.RtlUpcaseUnicodeChar
_RtlUpcaseUnicodeChar.argtypes = (ctypes.c_uint16,)
_RtlUpcaseUnicodeChar.restype = ctypes.c_uint16


def current_user_sid() -> str:
    """The SID string of the user this process runs as."""
    token = win32security.OpenProcessToken(win32api.GetCurrentProcess(), win32con.TOKEN_QUERY)
    try:
        sid = win32security.GetTokenInformation(token, win32security.TokenUser)[0]
    finally:
        win32api.CloseHandle(token)
    return str(win32security.ConvertSidToStringSid(sid))


def _account_sid(account: str) -> str:
    """The SID string of ``account`` (a name, or already a SID string).

    Raises:
        PipeOSError: no such account (``winerror`` says why), not a raw pywin32 error.
    """
    if account.startswith("S-1-"):
        return account
    try:
        sid, _, _ = win32security.LookupAccountName(None, account)
    except pywintypes.error as exc:
        raise translate_winerror(
            exc.winerror,
            exc.strerror,
            f"looking up the allowed_users account {account!r} (give an existing"
            " account name, DOMAIN\\name, or a SID string)",
        ) from exc
    return str(win32security.ConvertSidToStringSid(sid))


def security_descriptor_sddl(options: ListenOptions) -> str:
    """The SDDL of a listener's pipe: the caller's own, or owner + LocalSystem only.

    ``GA`` (generic all) for the current user and LocalSystem (``SY``), plus
    each of ``allowed_users``; ``allow_other_users`` adds Authenticated Users.
    ``P`` protects the DACL from inherited entries.
    """
    if options.security_descriptor is not None:
        return options.security_descriptor
    sids = [current_user_sid(), "SY"]
    sids += [_account_sid(a) for a in options.allowed_users]
    if options.allow_other_users:
        sids.append("AU")
    return "D:P" + "".join(f"(A;;GA;;;{sid})" for sid in dict.fromkeys(sids))


def listener_security(options: ListenOptions) -> Any:
    """The SECURITY_ATTRIBUTES every instance of a listener's pipe is created with.

    Raises:
        PipeOSError: an account in ``allowed_users`` does not exist, or the
            SDDL (given, or built from malformed SID strings) does not parse.
    """
    sddl = security_descriptor_sddl(options)
    sa = win32security.SECURITY_ATTRIBUTES()
    try:
        sa.SECURITY_DESCRIPTOR = win32security.ConvertStringSecurityDescriptorToSecurityDescriptor(
            sddl, win32security.SDDL_REVISION_1
        )
    except pywintypes.error as exc:
        raise translate_winerror(
            exc.winerror,
            exc.strerror,
            f"parsing the pipe's security descriptor {sddl!r} (check security_descriptor"
            " or the SID strings in allowed_users; SDDL looks like 'D:P(A;;GA;;;OW)')",
        ) from exc
    sa.bInheritHandle = False
    return sa


def os_upcase(text: str) -> str:
    """``text`` upper-cased the way the OS compares object names (RtlUpcaseUnicodeChar).

    Pipe names are case-insensitive by this per-UTF-16-unit table, which is not
    Python's ``upper``/``lower``/``casefold`` (KELVIN SIGN lowers to ``k`` in
    Python, yet it names another pipe than ``k``).
    """
    units = text.encode("utf-16-le", errors="surrogatepass")  # NT names are any UTF-16
    out = bytearray(len(units))
    for i in range(0, len(units), 2):
        unit = _RtlUpcaseUnicodeChar(int.from_bytes(units[i : i + 2], "little"))
        out[i : i + 2] = unit.to_bytes(2, "little")
    return out.decode("utf-16-le", errors="surrogatepass")


def semaphore_name(path: str) -> str:
    """The name of the semaphore that claims pipe ``path`` for one npipes listener.

    A hash of the name as the OS compares it: two names are one semaphore
    exactly when they are one pipe, and the name is short whatever the pipe's.
    """
    tail = path[len(_PIPE_PREFIX) :] if path[:9].lower() == _PIPE_PREFIX else path
    digest = hashlib.sha256(os_upcase(tail).encode("utf-16-le", errors="surrogatepass"))
    return _SEMAPHORE_PREFIX + digest.hexdigest()


def claim_name(path: str) -> Any:
    """Take this process's claim on ``path``: a named semaphore of count 1 (a PyHANDLE).

    Backs up FILE_FLAG_FIRST_PIPE_INSTANCE where the OS ignores it (Wine) and
    makes two racing npipes listeners end with exactly one. Unlike a mutex it
    has no thread affinity, so any thread may close the listener.

    Raises:
        PipeInUseError: another npipes listener owns ``path``, or another kind
            of object squats the claim's name.
        PipePermissionError: the claim's name exists and we may not open it.
    """
    name = semaphore_name(path)
    try:
        sem = win32event.CreateSemaphore(None, 1, 1, name)  # type: ignore[arg-type]  # stub: None is valid
    except pywintypes.error as exc:
        if exc.winerror == winerror.ERROR_ACCESS_DENIED:
            raise PipePermissionError(
                f"the claim {name!r} on {path} exists and denies us access (another user"
                " or a squatter holds it); pick another name",
                address=path,
            ) from exc
        raise PipeInUseError(
            f"the claim {name!r} on {path} is taken by another kind of object"
            f" ({exc.strerror}); pick another name",
            address=path,
        ) from exc
    if win32event.WaitForSingleObject(sem, 0) != win32event.WAIT_OBJECT_0:
        win32api.CloseHandle(sem)
        raise PipeInUseError(
            f"another npipes listener owns {path}; pick another name or stop it", address=path
        )
    return sem
