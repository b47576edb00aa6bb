"""Name -> address mapping (pure) on both platforms' rules."""

from __future__ import annotations

import os
import tempfile

import pytest

from npipes import InvalidPipeNameError
from npipes._names import SUN_PATH_MAX, resolve


def test_bare_name_windows() -> None:
    assert resolve("jobs", platform="win32").path == "\\\\.\\pipe\\jobs"


def test_full_windows_name_used_as_given() -> None:
    name = "\\\\.\\pipe\\Some Vendor\\pipe"
    assert resolve(name, platform="win32").path == name


@pytest.mark.posix
def test_bare_name_posix_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    runtime = os.fspath(tmp_path)
    os.chmod(runtime, 0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", runtime)
    address = resolve("jobs.v2_a-b", platform="linux")
    assert address.path == os.path.join(runtime, "npipes", "jobs.v2_a-b.sock")
    assert address.private_dir == os.path.join(runtime, "npipes")


@pytest.mark.posix
def test_bare_name_posix_tempdir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    expected = os.path.join(tempfile.gettempdir(), f"npipes-{os.getuid()}", "jobs.sock")
    assert resolve("jobs", platform="linux").path == expected


@pytest.mark.posix
def test_unusable_xdg_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("relative/dir", "/nonexistent/npipes-test"):
        monkeypatch.setenv("XDG_RUNTIME_DIR", value)
        assert resolve("jobs", platform="linux").path.startswith(tempfile.gettempdir())


@pytest.mark.posix
def test_absolute_path_used_as_given() -> None:
    address = resolve("/run/app/ctl.sock", platform="linux")
    assert address.path == "/run/app/ctl.sock"
    assert address.private_dir is None


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("", "empty"),
        ("../x", "only letters"),
        ("a/b", "only letters"),
        ("a\\b", "only letters"),
        ("a\0b", "NUL"),
        ("x" * 101, "at most 100"),
        ("..", "only dots"),
        ("héllo", "only letters"),
        ("sp ace", "only letters"),
    ],
)
@pytest.mark.parametrize("platform", ["linux", "win32"])
def test_invalid_names(name: str, rule: str, platform: str) -> None:
    with pytest.raises(InvalidPipeNameError, match=rule) as info:
        resolve(name, platform=platform)
    assert isinstance(info.value, ValueError)
    assert info.value.name == name


@pytest.mark.posix
def test_too_long_for_sun_path() -> None:
    with pytest.raises(InvalidPipeNameError, match="sun_path"):
        resolve("/" + "d" * SUN_PATH_MAX, platform="linux")
    resolve("/" + "d" * (SUN_PATH_MAX - 1), platform="linux")


def test_windows_path_on_posix_and_windows_rules() -> None:
    with pytest.raises(InvalidPipeNameError):
        resolve("\\\\.\\pipe\\x", platform="linux")
    with pytest.raises(InvalidPipeNameError):
        resolve("\\\\.\\pipe\\", platform="win32")
    with pytest.raises(InvalidPipeNameError):
        resolve("/abs/path", platform="win32")


def test_not_a_string() -> None:
    with pytest.raises(TypeError):
        resolve(b"jobs")  # type: ignore[arg-type]


def test_windows_limit_is_on_the_whole_pipe_path() -> None:
    prefix = "\\\\.\\pipe\\"
    assert resolve(prefix + "n" * 247, platform="win32").path == prefix + "n" * 247
    with pytest.raises(InvalidPipeNameError, match="256"):
        resolve(prefix + "n" * 248, platform="win32")
