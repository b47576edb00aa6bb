"""Build and run the C# examples (examples/csharp) with Mono, for tests/test_dotnet14_*.py.

Mono's ``mcs`` compiles the same C# 7.3 sources the .NET SDK builds from the
.csproj files, and Mono's ``System.IO.Pipes`` is .NET's: on Linux a pipe NAME is
the Unix socket ``$TMPDIR/CoreFxPipe_NAME`` (``/tmp`` without ``TMPDIR``).
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "csharp"
PROGRAMS = ("NpipesClient", "NpipesServer", "StreamStringClient", "StreamStringServer")
WAIT = 60.0
"""Seconds a C# process may take for anything (Mono starts slowly on a loaded machine)."""


def missing_tools() -> str | None:
    """Why the C# examples cannot be built and run here, or None if they can."""
    absent = [tool for tool in ("mcs", "mono") if shutil.which(tool) is None]
    if not absent:
        return None
    return (
        f"{' and '.join(absent)} not found: the C# examples need Mono's compiler and runtime"
        " (Debian/Ubuntu: apt-get install mono-mcs mono-runtime libmono-system-core4.0-cil)"
    )


def build_command(program: str, out: Path) -> list[str]:
    """The mcs command that builds ``program`` (what examples/csharp/README.md shows)."""
    return [
        "mcs",
        "-nologo",
        "-langversion:7",
        "-warnaserror",
        f"-out:{out}",
        str(EXAMPLES / program / "Program.cs"),
        str(EXAMPLES / "Shared" / "Npipes.cs"),
    ]


def build(outdir: Path) -> dict[str, Path]:
    """Compile every example into ``outdir``; return program name -> .exe path."""
    exes = {}
    for program in PROGRAMS:
        exe = outdir / f"{program}.exe"
        done = subprocess.run(
            build_command(program, exe), capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"mcs failed for {program}:\n{done.stdout}{done.stderr}"
        exes[program] = exe
    return exes


def mono_env(tmpdir: str | None) -> dict[str, str]:
    """The environment of a C# process: UTF-8 arguments and output, the given TMPDIR
    (None: no TMPDIR, so .NET uses /tmp)."""
    env = dict(os.environ, LC_ALL="C.UTF-8", LANG="C.UTF-8")
    env.pop("TMPDIR", None)
    if tmpdir is not None:
        env["TMPDIR"] = tmpdir
    return env


def run(exe: Path, args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a C# client to completion (stdout and stderr as UTF-8 text)."""
    return subprocess.run(
        ["mono", str(exe), *args],
        capture_output=True,
        encoding="utf-8",
        env=dict(env),
        timeout=WAIT,
    )


class Running:
    """A C# program running in the background: stdout and stderr go to files (a pipe
    nobody reads yet could fill up and block it), except for a server's stdout, which
    is a pipe so that its "ready" line can be awaited."""

    def __init__(self, exe: Path, args: list[str], env: Mapping[str, str], *, pipe: bool) -> None:
        # closed by finish()
        self.out = None if pipe else tempfile.TemporaryFile()  # noqa: SIM115
        self.err = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["mono", str(exe), *args],
            stdout=subprocess.PIPE if self.out is None else self.out,
            stderr=self.err,
            env=dict(env),
        )
        self.pid = self.proc.pid

    def kill(self) -> None:
        self.proc.kill()


def start(exe: Path, args: list[str], env: Mapping[str, str]) -> Running:
    """Start a C# client in the background (then :func:`finish` it)."""
    return Running(exe, args, env, pipe=False)


def start_server(exe: Path, args: list[str], env: Mapping[str, str]) -> Running:
    """Start a C# server and wait for its "ready" line: its pipe exists from then on."""
    server = Running(exe, args, env, pipe=True)
    line = read_line(server.proc.stdout, WAIT)
    if line != b"ready\n":
        server.kill()
        code, out, err = finish(server)
        raise AssertionError(f"the C# server did not get ready: {line!r}, {code}, {out!r}, {err!r}")
    return server


def read_line(stream: IO[bytes] | None, timeout: float) -> bytes:
    """One line of ``stream``, or b"" if none comes within ``timeout`` s."""
    assert stream is not None
    lines: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return b""


def finish(running: Running) -> tuple[int, str, str]:
    """Wait for a C# program (killed if it hangs); return its code, stdout and stderr."""
    proc = running.proc
    try:
        piped, _ = proc.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(
            f"the C# program hung and was killed: {_read(running.err)!r}"
        ) from None
    out = (piped or b"").decode() if proc.stdout is not None else _read(running.out)
    return proc.returncode, out, _read(running.err)


def _read(file: IO[bytes]) -> str:
    file.seek(0)
    text = file.read().decode()
    file.close()
    return text
