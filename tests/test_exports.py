"""The public namespace: __all__ is complete and everything in it exists."""

from __future__ import annotations

import npipes
import npipes.errors
import npipes.ipc
import npipes.pipes


def test_all_is_complete() -> None:
    public = {n for n in dir(npipes) if not n.startswith("_")}
    modules = {"connection", "errors", "ipc", "pipes", "cli", "server", "aio", "fifo"}
    assert public - modules - {"annotations"} <= set(npipes.__all__)
    for name in npipes.__all__:
        assert hasattr(npipes, name), name


def test_errors_reexported() -> None:
    for name in npipes.errors.__all__:
        if not name.startswith("translate_"):
            assert getattr(npipes, name) is getattr(npipes.errors, name)


def test_version() -> None:
    assert npipes.__version__ == "2.0.0.dev0"


def test_seed_modules() -> None:
    assert npipes.ipc.IPC
    assert npipes.pipes.Pipes
    assert npipes.ipc.DEFAULT_NAME == "IPC_PIPE_DEFAULT"
