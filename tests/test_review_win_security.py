"""Review of the Windows backend's security half: bad options fail typed, and leak nothing."""

from __future__ import annotations

import pytest

import npipes

pytestmark = pytest.mark.windows


@pytest.mark.parametrize(
    ("options", "winerror"),
    [
        ({"allowed_users": ["no-such-account-zz9"]}, 1332),  # ERROR_NONE_MAPPED
        ({"security_descriptor": "not an SDDL((("}, None),
        ({"allowed_users": ["S-1-not-a-sid"]}, None),
    ],
    ids=["unknown-account", "bad-sddl", "bad-sid-string"],
)
def test_bad_security_options_are_typed_errors(
    pipe_name: str, options: dict[str, object], winerror: int | None
) -> None:
    # Today a raw pywintypes.error (not even an OSError) escapes listen().
    with pytest.raises(npipes.NpipesError) as info:
        npipes.listen(pipe_name, **options)  # type: ignore[arg-type]
    assert isinstance(info.value, OSError)
    assert info.value.winerror is not None
    if winerror is not None:
        assert info.value.winerror == winerror
    assert isinstance(info.value.__cause__, Exception)  # the pywin32 error, chained
    # Nothing of the failed listen holds the name.
    with (
        npipes.listen(pipe_name) as lst,
        npipes.connect(pipe_name, timeout=10) as client,
        lst.accept(timeout=10) as conn,
    ):
        client.send("ok")
        assert conn.recv(timeout=10) == "ok"


def test_a_pipe_name_with_a_lone_surrogate_listens(pipe_name: str) -> None:
    # NT object names are any UTF-16, and pywin32 passes a lone surrogate
    # through; the per-name claim's hash raised UnicodeEncodeError on it.
    name = "\\\\.\\pipe\\" + pipe_name + "-\udc80"
    with (
        npipes.listen(name) as lst,
        npipes.connect(name, timeout=10) as client,
        lst.accept(timeout=10) as conn,
    ):
        client.send(b"x")
        assert conn.recv(timeout=10) == b"x"
