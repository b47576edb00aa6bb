"""Attack (issue 13): the accelerator loader, ``npipes._accel``, against a local user
who plants a ``_speedups`` module where an import might find it (the current
directory, ``PYTHONPATH``, a top-level module of that name), and the semantics of
``NPIPES_PURE_PYTHON``. Each check runs in a fresh interpreter.

The loader imports ``from . import _speedups``: only the package's own directory is
searched (as for every submodule of an installed package); whoever can write there
can replace any npipes module anyway.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "npipes"

PLANT = """
import os
open(os.environ["NPIPES_PLANT_MARK"], "a").write(__name__ + "\\n")
def configure(crc32): pass
def encode_small(*a): return b"PLANTED"
encode_small_many = parse_frame = parse_frames = encode_small
"""

PROBE = """
import json, sys
import npipes, npipes._accel as a, npipes._frame as f
print(json.dumps({
    "accelerated": a.ACCELERATED,
    "file": getattr(a.speedups, "__file__", None),
    "package": npipes.__path__[0],
    "frame": f.encode_small(b"x", False, None).hex(),
}))
"""


def probe(
    cwd: Path, env_extra: dict[str, str], before: tuple[str, ...] = (), after: tuple[str, ...] = ()
) -> dict[str, object]:
    """Run PROBE in a fresh interpreter with ``before``/``after`` around src on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != "NPIPES_PURE_PYTHON"}
    env.update(env_extra)
    env["PYTHONPATH"] = os.pathsep.join([*before, str(SRC), *after])
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def _built() -> bool:
    """Whether this interpreter's build is there (a checkout may hold other versions')."""
    import importlib.machinery

    return any(
        (PACKAGE / f"_speedups{suffix}").exists()
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
    )


GOOD_FRAME = (b"NP\x01\x00" + bytes(4) + (1).to_bytes(8, "little") + b"x").hex()


@pytest.mark.parametrize("where", ["cwd", "pythonpath", "pythonpath-package"])
def test_a_planted_speedups_module_is_never_imported(tmp_path: Path, where: str) -> None:
    mark = tmp_path / "imported"
    plant = tmp_path / "plant"
    plant.mkdir()
    if where == "pythonpath-package":
        # A second "npipes" package on the path (after the real one): never merged in.
        (plant / "npipes").mkdir()
        (plant / "npipes" / "_speedups.py").write_text(PLANT)
    else:
        (plant / "_speedups.py").write_text(PLANT)
    # "cwd": python -c puts the current directory first on sys.path.
    cwd = plant if where == "cwd" else tmp_path
    env = {"NPIPES_PLANT_MARK": str(mark)}
    if where == "pythonpath":
        result = probe(cwd, env, before=(str(plant),))
    else:
        result = probe(cwd, env, after=() if where == "cwd" else (str(plant),))
    assert not mark.exists(), "a planted _speedups module was imported"
    assert result["frame"] == GOOD_FRAME
    if result["accelerated"]:
        file = Path(str(result["file"]))
        assert file.parent == PACKAGE.resolve() or file.parent == PACKAGE, result
        assert file.suffix in (".so", ".pyd"), result
    else:
        assert not _built(), result


@pytest.mark.parametrize(
    ("value", "pure"),
    [("1", True), ("yes", True), ("true", True), ("0", False), ("", False), (" ", True)],
)
def test_npipes_pure_python_values(tmp_path: Path, value: str, pure: bool) -> None:
    """Any non-empty value other than "0" forces the pure path (docs/performance.md)."""
    result = probe(tmp_path, {"NPIPES_PURE_PYTHON": value})
    assert result["frame"] == GOOD_FRAME
    if pure or not _built():
        assert result["accelerated"] is False
        assert result["file"] is None
    else:
        assert result["accelerated"] is True
