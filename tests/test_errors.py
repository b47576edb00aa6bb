"""The error tree: each npipes error is also the builtin a user would catch."""

from __future__ import annotations

import errno
import sys

import pytest

import npipes
from npipes import errors

TREE = {
    "ProtocolError": ConnectionError,
    "ChecksumError": ValueError,
    "MessageTooLargeError": ValueError,
    "BufferTooSmallError": ValueError,
    "ConnectionClosedError": ConnectionError,
    "IncompleteMessageError": npipes.ConnectionClosedError,
    "PipeTimeoutError": TimeoutError,
    "PipeNotFoundError": FileNotFoundError,
    "PipeInUseError": FileExistsError,
    "PipeBusyError": ConnectionError,
    "InvalidPipeNameError": ValueError,
    "PipePermissionError": PermissionError,
    "AuthenticationError": npipes.PipePermissionError,
    "PipeOSError": OSError,
}


@pytest.mark.parametrize(("name", "builtin"), TREE.items())
def test_tree(name: str, builtin: type[BaseException]) -> None:
    cls = getattr(npipes, name)
    assert cls is getattr(errors, name)
    assert issubclass(cls, npipes.NpipesError)
    assert issubclass(cls, builtin)


def test_errors_carry_context() -> None:
    exc = npipes.MessageTooLargeError("too big", size=5, limit=4, name="n", address="/a")
    assert (exc.size, exc.limit, exc.name, exc.address, str(exc)) == (5, 4, "n", "/a", "too big")
    timeout = npipes.PipeTimeoutError("late", timeout=2.0)
    assert timeout.timeout == 2.0
    assert not timeout.partial


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (errno.ENOENT, npipes.PipeNotFoundError),
        (errno.ECONNREFUSED, npipes.PipeNotFoundError),
        (errno.EACCES, npipes.PipePermissionError),
        (errno.EADDRINUSE, npipes.PipeInUseError),
        (errno.EPIPE, npipes.ConnectionClosedError),
        (errno.ECONNRESET, npipes.ConnectionClosedError),
        (errno.EIO, npipes.PipeOSError),
        (errno.EMFILE, npipes.PipeOSError),
    ],
)
def test_translate_os_error(code: int, cls: type[npipes.NpipesError]) -> None:
    exc = errors.translate_os_error(OSError(code, "x"), "connect", address="/p", name="n")
    assert type(exc) is cls
    assert "connect (/p) failed" in str(exc)
    assert exc.address == "/p"
    assert exc.name == "n"
    # Mapped or not, the error is an OSError that kept the OS's errno and text.
    assert isinstance(exc, OSError)
    assert (exc.errno, exc.strerror) == (code, "x")


def test_unmapped_os_error_keeps_errno_and_says_which() -> None:
    """EMFILE has no class of its own: it is still an OSError a server can check for."""
    source = OSError(errno.EMFILE, "Too many open files", "/p")
    exc = errors.translate_os_error(source, "accept", address="/p")
    assert type(exc) is npipes.PipeOSError
    assert isinstance(exc, npipes.NpipesError)
    assert exc.errno == errno.EMFILE
    assert exc.strerror == "Too many open files"
    assert exc.filename == "/p"
    assert str(exc) == "accept (/p) failed: Too many open files (EMFILE)"
    with pytest.raises(OSError, match="Too many open files") as info:
        raise exc from source
    assert info.value.errno == errno.EMFILE


def test_os_error_without_errno_is_still_an_os_error() -> None:
    exc = errors.translate_os_error(OSError("odd"), "read")
    assert type(exc) is npipes.PipeOSError
    assert exc.errno is None
    assert str(exc) == "read failed: odd"


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (2, npipes.PipeNotFoundError),
        (5, npipes.PipePermissionError),
        (109, npipes.ConnectionClosedError),
        (231, npipes.PipeBusyError),
        (1450, npipes.PipeOSError),  # ERROR_NO_SYSTEM_RESOURCES: no class of its own
    ],
)
def test_translate_winerror_keeps_winerror(code: int, cls: type[npipes.NpipesError]) -> None:
    exc = errors.translate_winerror(code, "the OS text", "send", address=r"\\.\pipe\n", name="n")
    assert type(exc) is cls
    assert isinstance(exc, OSError)
    assert getattr(exc, "winerror", None) == code  # typeshed has it on Windows only
    assert exc.strerror == "the OS text"
    assert (exc.name, exc.address) == ("n", r"\\.\pipe\n")
    # errno is what Python itself derives from that Windows error (None off Windows).
    assert exc.errno == OSError(None, "the OS text", None, code).errno
    if sys.platform == "win32" and code == 2:
        assert exc.errno == errno.ENOENT


def test_unmapped_winerror_message_names_the_code() -> None:
    exc = errors.translate_winerror(1450, "Insufficient system resources", "accept")
    assert str(exc) == "accept failed: Insufficient system resources (Windows error 1450)"
