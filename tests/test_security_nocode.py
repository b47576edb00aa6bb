"""No code execution (docs/security.md): a pickled object a peer sends arrives as its
bytes and nothing in it runs; ``src/npipes`` never imports a deserializer that could."""

from __future__ import annotations

import ast
import asyncio
import multiprocessing.connection
import multiprocessing.reduction
import os
import pathlib
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import npipes
import npipes.aio
from npipes.ipc import IPC

WAIT = 30.0
SRC = Path(npipes.__file__).resolve().parent
UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle"}


class Trap:
    """Unpickling this creates ``marker``: proof that a receiver ran the sender's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (pathlib.Path.touch, (self.marker,))


def stdlib_sender(path: str, marker: Path) -> threading.Thread:
    """A stdlib ``multiprocessing.connection.Client`` that sends a trap with ``send`` (pickle)."""

    def send() -> None:
        with multiprocessing.connection.Client(path, family="AF_UNIX") as client:
            client.send(Trap(marker))

    thread = threading.Thread(target=send)
    thread.start()
    return thread


@pytest.mark.posix  # the stdlib client speaks AF_UNIX here
@pytest.mark.parametrize("receiver", ["sync", "aio", "ipc"])
def test_a_pickled_object_arrives_as_bytes_and_nothing_runs(tmp_path: Path, receiver: str) -> None:
    path = str(tmp_path / "mp.sock")
    marker = tmp_path / "pwned"
    expected = bytes(multiprocessing.reduction.ForkingPickler.dumps(Trap(marker)))
    if receiver == "sync":
        with npipes.listen(path, framing="multiprocessing") as listener:
            thread = stdlib_sender(path, marker)
            with listener.accept(timeout=WAIT) as conn:
                got = conn.recv(timeout=WAIT)
    elif receiver == "aio":

        async def main() -> object:
            async with await npipes.aio.listen(path, framing="multiprocessing") as listener:
                thread = stdlib_sender(path, marker)
                try:
                    async with await listener.accept(timeout=WAIT) as conn:
                        return await conn.recv(timeout=WAIT)
                finally:
                    await asyncio.to_thread(thread.join, WAIT)

        got = asyncio.run(main())
        thread = threading.Thread(target=lambda: None)
        thread.start()
    else:
        with IPC(path, timeout=WAIT, framing="multiprocessing") as ipc:  # listens: nobody there
            thread = stdlib_sender(path, marker)
            got = ipc.receive_message()
    thread.join(WAIT)
    assert isinstance(got, bytes)
    assert got == expected
    assert not marker.exists()


# The one exception (issue 12): send_pyobj/recv_pyobj import pickle inside these
# functions of _objects.py, and recv_pyobj unpickles only with allow_pickle=True.
PICKLE_ALLOWED = {("_objects.py", "encode_pickle"), ("_objects.py", "decode_pickle")}


def test_npipes_never_imports_a_deserializer_of_code() -> None:
    """No module of ``src/npipes`` imports pickle (or a kin) or calls eval/exec, but
    for the two functions behind ``send_pyobj``/``recv_pyobj``."""
    found = []
    for file in sorted(SRC.rglob("*.py")):
        tree = ast.parse(file.read_text(encoding="utf-8"), str(file))
        allowed_here = {
            inner.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and (file.name, node.name) in PICKLE_ALLOWED
            for inner in ast.walk(node)
            if isinstance(inner, ast.Import) and [a.name for a in inner.names] == ["pickle"]
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and node.lineno in allowed_here:
                continue
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("eval", "exec", "__import__")
            ):
                names = [node.func.id]
            found += [
                f"{file.relative_to(SRC)}:{node.lineno}: {name}"
                for name in names
                if name.split(".")[0] in UNSAFE_MODULES | {"eval", "exec", "__import__"}
            ]
    assert found == []


@pytest.mark.posix  # on Windows, pywin32 is imported too; the AST check above covers npipes
def test_importing_npipes_loads_no_pickle() -> None:
    """Not even indirectly, through the stdlib (``marshal`` is left out: the import system
    itself loads it)."""
    code = (
        "import sys, npipes, npipes.aio, npipes.fifo, npipes.ipc, npipes.cli, npipes.server;"
        f" print(sorted(set(sys.modules).intersection({sorted(UNSAFE_MODULES - {'marshal'})!r})))"
    )
    # Without coverage.py's start-up hook (CI measures every process): it loads pickle itself.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
        env=env,
    )
    assert out.stdout.strip() == "[]"
