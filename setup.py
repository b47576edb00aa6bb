"""Builds the optional C accelerator, ``npipes._speedups`` (the metadata is in pyproject.toml).

The extension is ``optional``: without a C compiler, or when the build fails, setuptools
prints a warning and installs the pure-Python package, which is complete on its own.
``NPIPES_BUILD_PURE=1`` at build time skips the extension; ``NPIPES_BUILD_REQUIRE=1`` makes a
failed build an error (the wheel builds use it: a wheel must carry the accelerator).
"""

from __future__ import annotations

import os

from setuptools import Extension, setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


ext_modules = []
if not _flag("NPIPES_BUILD_PURE"):
    optional = not _flag("NPIPES_BUILD_REQUIRE")
    ext_modules.append(Extension("npipes._speedups", ["src/npipes/_speedups.c"], optional=optional))

setup(ext_modules=ext_modules)
