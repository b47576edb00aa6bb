"""The per-name claim of a Windows listener, and pipe-name limits (issue 10, section 6).

Windows compares pipe names with its own upcase table, not Python's case
rules; the claim (a named semaphore) must collide exactly when the pipes do,
and a name squatted by another object or locked by a DACL is a typed error.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Any

import pytest

import npipes
from npipes._deadline import Deadline
from npipes._names import resolve

pytestmark = pytest.mark.windows

if sys.platform == "win32":
    import pywintypes
    import win32event
    import win32security

    from npipes._backend import ListenOptions, windows_security
    from npipes._backend.windows_aio import AioListener, open_connection

KELVIN = "\u212a"  # KELVIN SIGN: Python lowers it to "k", Windows keeps it apart from "K"


def _path(tail: str) -> str:
    return "\\\\.\\pipe\\" + tail


def _old_claim_name(path: str) -> str:
    """The claim's name before issue 10 (lower-cased tail), squatted too so old code is tested."""
    return "Local\\npipes-listener-" + path[len("\\\\.\\pipe\\") :].lower()


def test_kelvin_sign_and_k_are_different_pipes_and_both_listen() -> None:
    base = f"t-{uuid.uuid4().hex[:8]}-"
    kelvin, ascii_k = _path(base + KELVIN), _path(base + "k")
    with (
        npipes.listen(kelvin) as first,
        npipes.listen(ascii_k) as second,
        npipes.connect(kelvin, timeout=10) as a,
        npipes.connect(ascii_k, timeout=10) as b,
    ):
        a.send("kelvin")
        b.send("k")
        with first.accept(timeout=10) as c1, second.accept(timeout=10) as c2:
            assert c1.recv(timeout=10) == "kelvin"
            assert c2.recv(timeout=10) == "k"


def test_names_that_differ_only_in_ascii_case_are_one_pipe() -> None:
    base = f"t-{uuid.uuid4().hex[:8]}-"
    with npipes.listen(_path(base + "abc")), pytest.raises(npipes.PipeInUseError):
        npipes.listen(_path(base + "ABC"))


def test_claim_name_is_the_os_upcase_hash() -> None:
    one = windows_security.semaphore_name(_path("MiXeD"))
    assert one == windows_security.semaphore_name(_path("mixed"))
    assert one != windows_security.semaphore_name(_path("mixed" + KELVIN))
    assert len(windows_security.semaphore_name(_path("x" * 240))) < 100


def _squat(path: str, make: Any) -> list[Any]:
    names = {windows_security.semaphore_name(path), _old_claim_name(path)}
    return [make(name) for name in names]


def test_claim_squatted_by_another_object_type_is_typed(pipe_name: str) -> None:
    path = _path(pipe_name)
    handles = _squat(path, lambda name: win32event.CreateEvent(None, True, False, name))
    try:
        with pytest.raises(npipes.PipeInUseError):
            npipes.listen(pipe_name)
    finally:
        for handle in handles:
            handle.Close()
    with npipes.listen(pipe_name):
        pass  # free again once the squatter left


def test_claim_locked_by_a_deny_all_dacl_is_typed(pipe_name: str) -> None:
    sa = win32security.SECURITY_ATTRIBUTES()
    sa.SECURITY_DESCRIPTOR = win32security.ConvertStringSecurityDescriptorToSecurityDescriptor(
        "D:P", win32security.SDDL_REVISION_1
    )
    handles = _squat(_path(pipe_name), lambda name: win32event.CreateSemaphore(sa, 0, 1, name))
    try:
        with pytest.raises(npipes.PipePermissionError) as info:
            npipes.listen(pipe_name)
        assert not isinstance(info.value, pywintypes.error)
    finally:
        for handle in handles:
            handle.Close()


def _open(side: str, path: str) -> None:
    if side == "listen":
        npipes.listen(path)
    elif side == "connect":
        npipes.connect(path, timeout=1)
    elif side == "aio-listen":
        AioListener(resolve(path), ListenOptions())
    else:
        asyncio.run(
            open_connection(
                resolve(path),
                Deadline(1),
                wait_for_listener=False,
                protocol_factory=asyncio.Protocol,
            )
        )


@pytest.mark.parametrize("side", ["listen", "connect", "aio-listen", "aio-connect"])
def test_name_over_the_os_limit_is_invalid_at_the_call(side: str) -> None:
    tag = uuid.uuid4().hex[:8]
    path = _path(tag + "n" * (257 - 9 - 8))  # 257 characters; Windows documents 256 at most
    assert len(path) == 257
    with pytest.raises(npipes.InvalidPipeNameError):
        _open(side, path)
    ok = _path(tag + "n" * (256 - 9 - 8))
    with npipes.listen(ok) as lst, npipes.connect(ok, timeout=10), lst.accept(timeout=10):
        pass
