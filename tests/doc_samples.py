"""Finding the code blocks of README.md and docs/*.md, and running sample processes.

Used by tests/test_doc_samples.py (the marker convention is in its docstring) and
tests/test_examples14.py (examples/ run as real processes). Parsing is pure; `Running`
starts one process and collects its output as it comes, so a server can be interrupted
once it printed what it should, never after a sleep.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: Fence languages that must be run (with a marker); `pycon` blocks run as doctests.
PYTHON = {"python", "py"}
SHELL = {"sh", "bash", "shell", "console"}
DOCTEST = {"pycon"}
RUNNABLE = PYTHON | SHELL | DOCTEST

FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n`]*\n(?P<code>.*?)^(?P=indent)```[ \t]*$",
    re.M | re.S,
)
MARKER = re.compile(r"^<!-- sample: (?P<group>[\w-]+) (?P<part>[\w-]+)(?P<attrs>[^>]*?)\s*-->$")
COMMENT = re.compile(r"^<!--.*-->$")
ATTR = re.compile(r'([\w-]+)=(?:"([^"]*)"|(\S+))')
KNOWN_ATTRS = {
    "name",
    "prints",
    "stop",
    "platform",
    "asyncio",
    "skip-lines",
    "run",
    "reason",
    "requires",
    "needs",
    "repo",
}


@dataclass
class Block:
    """One fenced code block: where it is, its language, its code and its marker (if any)."""

    doc: str
    line: int
    lang: str
    code: str
    group: str = ""
    part: str = ""
    attrs: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def names(self) -> list[str]:
        return [name for name in self.attrs.get("name", "").split(",") if name]

    @property
    def prints(self) -> list[str]:
        text = self.attrs.get("prints", "")
        return [line.strip() for line in text.split("|")] if text else []


def blocks(doc: Path) -> list[Block]:
    """Every fenced block of ``doc``, with the ``<!-- sample: ... -->`` marker above it.

    The marker is on one of the comment lines directly above the fence (other HTML
    comments, such as another test's ``<!-- example: ... -->``, may sit between them).
    """
    text = doc.read_text(encoding="utf-8")
    found = []
    for m in FENCE.finditer(text):
        indent = m["indent"]
        code = "".join(
            line[len(indent) :] if line.startswith(indent) else line
            for line in m["code"].splitlines(keepends=True)
        )
        line = text.count("\n", 0, m.start()) + 1
        block = Block(doc.name, line, m["lang"].lower(), code)
        above = text[: m.start()].splitlines()
        while above and COMMENT.match(above[-1].strip()):
            marker = MARKER.match(above.pop().strip())
            if marker:
                block.group, block.part = marker["group"], marker["part"]
                block.attrs = {k: q or b for k, q, b in ATTR.findall(marker["attrs"])}
                break
        found.append(block)
    return found


def all_blocks() -> list[Block]:
    return [block for doc in DOCS for block in blocks(doc)]


def rename(code: str, names: list[str], suffix: str, *, bare: bool = True) -> str:
    """Replace each of ``names`` by ``NAME-suffix``: quoted (``"NAME"``, ``'NAME'``) and,
    with ``bare`` (shell code), as a bare word.

    A bare word is bounded by anything but letters, digits, ``_`` and ``-``, so ``jobs``
    is replaced in ``--name jobs`` and ``jobs.sock``, not in ``jobs2`` or ``--jobs``.
    Python code only has its quoted names replaced: ``f"echo: {x}"`` keeps its ``echo``.
    """
    for name in names:
        word = re.escape(name)
        if bare:
            code = re.sub(rf"(?<![\w-]){word}(?![\w-])", f"{name}-{suffix}", code)
        else:
            code = re.sub(rf"([\"']){word}\1", rf"\g<1>{name}-{suffix}\g<1>", code)
    return code


def skip_lines(code: str, prefixes: list[str]) -> str:
    """Drop the shell commands that start with one of ``prefixes``.

    A command is a line or one link of an ``&&`` chain: ``pip install . && npipes demo``
    with ``skip-lines="pip install"`` runs ``npipes demo``.
    """
    kept = []
    for line in code.splitlines():
        commands = [c for c in line.split("&&") if not _starts(c.strip(), prefixes)]
        if commands:
            kept.append("&&".join(commands).strip())
    return "\n".join(kept) + "\n"


def _starts(command: str, prefixes: list[str]) -> bool:
    words = command.split()
    for prefix in prefixes:
        want = prefix.split()
        # "pip install" also matches "python3 -m pip install".
        for at in range(len(words)):
            if words[at : at + len(want)] == want and (
                at == 0 or words[:at] in (["python3", "-m"], ["python", "-m"])
            ):
                return True
    return False


def console_commands(code: str) -> tuple[str, list[str]]:
    """A ``console`` block's commands (``$ `` lines, ``> `` continuing one) and the other
    lines (their output, in order)."""
    commands: list[str] = []
    output = []
    for line in code.splitlines():
        if line.startswith("$ "):
            commands.append(line[2:])
        elif line.startswith("> ") and commands:
            commands[-1] += "\n" + line[2:]
        elif line.strip():
            output.append(line.strip())
    return "\n".join(commands) + "\n", output


def shell_bin(directory: Path) -> Path:
    """A directory for PATH where ``npipes``, ``python`` and ``python3`` are this checkout's."""
    directory.mkdir(parents=True, exist_ok=True)
    for command, args in (("npipes", "-m npipes "), ("python", ""), ("python3", "")):
        script = directory / command
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" {args}"$@"\n', encoding="utf-8")
        script.chmod(0o755)
    return directory


def child_env(bin_dir: Path | None = None) -> dict[str, str]:
    """The environment of a sample process: ours, UTF-8 output, and the sample bin first."""
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    if bin_dir is not None:
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


class Running:
    """One sample process; its stdout is collected line by line as it comes."""

    def __init__(self, label: str, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.label = label
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            text=True,
            encoding="utf-8",
            errors="replace",
            # Its own process group on POSIX: Ctrl+C reaches a shell and its commands.
            start_new_session=sys.platform != "win32",
        )
        self.lines: list[str] = []
        self.err = ""
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read_out, daemon=True),
            threading.Thread(target=self._read_err, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\r\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.err = self.proc.stderr.read()

    @property
    def out(self) -> str:
        return "\n".join(self.lines)

    def missing(self, wanted: list[str]) -> str | None:
        """The first of ``wanted`` not printed (in order, stripped), or None."""
        at = 0
        lines = [line.strip() for line in list(self.lines)]
        for want in wanted:
            while at < len(lines) and lines[at] != want:
                at += 1
            if at == len(lines):
                return want
            at += 1
        return None

    def wait_for(self, wanted: list[str], timeout: float) -> None:
        """Wait until ``wanted`` was printed, the output ended, or ``timeout`` passed."""
        with self._changed:
            self._changed.wait_for(
                lambda: self.missing(wanted) is None or not self._readers[0].is_alive(),
                timeout,
            )

    def interrupt(self) -> None:
        """Ctrl+C: SIGINT to its process group on POSIX; killed on Windows (a console
        Ctrl+C cannot be aimed at one child there)."""
        if self.proc.poll() is not None:
            return
        if sys.platform == "win32":
            self.proc.kill()
        else:
            os.killpg(self.proc.pid, signal.SIGINT)

    def kill(self) -> None:
        """Kill it (and, on POSIX, its process group) if it still runs; wait; close the pipes."""
        if self.proc.poll() is None:
            if sys.platform == "win32":
                self.proc.kill()
            else:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._join()

    def finish(self, timeout: float) -> int | None:
        """Wait for the exit and the end of the output; None if still running (then killed)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        self._join()
        return self.proc.returncode

    def _join(self) -> None:
        for reader in self._readers:
            reader.join(30)
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        if not any(reader.is_alive() for reader in self._readers):
            self.proc.stdout.close()
            self.proc.stderr.close()
