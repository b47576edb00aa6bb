"""The error tree: each npipes error is also the builtin a user would catch."""

from __future__ import annotations

import errno

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
        (errno.EIO, npipes.NpipesError),
    ],
)
def test_translate_os_error(code: int, cls: type[npipes.NpipesError]) -> None:
    exc = errors.translate_os_error(OSError(code, "x"), "connect", address="/p", name="n")
    assert type(exc) is cls
    assert "connect (/p) failed" in str(exc)
    assert exc.address == "/p"
    assert exc.name == "n"
