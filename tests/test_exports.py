"""The public namespace: __all__ is complete and everything in it exists."""

from __future__ import annotations

import npipes
import npipes.errors
import npipes.ipc
import npipes.pipes


def test_all_is_complete() -> None:
    public = {n for n in dir(npipes) if not n.startswith("_")}
    modules = {
        "connection",
        "errors",
        "ipc",
        "pipes",
        "cli",
        "server",
        "aio",
        "fifo",
        "pubsub",
        "bridge",
    }
    assert public - modules - {"annotations"} <= set(npipes.__all__)
    for name in npipes.__all__:
        assert hasattr(npipes, name), name


def test_errors_reexported() -> None:
    for name in npipes.errors.__all__:
        if not name.startswith("translate_"):
            assert getattr(npipes, name) is getattr(npipes.errors, name)


def test_version() -> None:
    """One version, written once (npipes.__version__): a PEP 440 string, and what
    the installed distribution's metadata says when this copy is the installed one."""
    import re
    from importlib import metadata
    from pathlib import Path

    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?", npipes.__version__)
    try:
        dist = metadata.distribution("npipes")
    except metadata.PackageNotFoundError:
        return  # run from a source tree that is not installed (e.g. under Wine)
    if Path(str(dist.locate_file("npipes/__init__.py"))).resolve() == Path(
        npipes.__file__
    ).resolve() or "editable" in (dist.read_text("direct_url.json") or ""):
        assert dist.version == npipes.__version__


def test_seed_modules() -> None:
    assert npipes.ipc.IPC
    assert npipes.pipes.Pipes
    assert npipes.ipc.DEFAULT_NAME == "IPC_PIPE_DEFAULT"


def test_options_typeddicts_are_public() -> None:
    """docs/api.md names them for typing wrappers: they are exported as documented."""
    from npipes import _options

    assert npipes.Options is _options.Options
    assert npipes.ConnectOptions is _options.ConnectOptions
    assert npipes.ListenOptions is _options.ListenOptions
