"""Every Python and shell sample in README.md and docs/*.md runs as written.

Every fenced block in ```python, ```py, ```sh, ```bash, ```shell or ```console has a
marker on a comment line directly above it (other HTML comments may sit between)::

    <!-- sample: GROUP PART name=WORD prints="line 1|line 2" stop=ctrl-c -->

and a block without one fails `test_every_runnable_block_has_a_marker`. A block that is
not code to run uses another fence: ```text (output, layouts), ```pycon (an interpreter
session: run as a doctest, marker optional), ```c, ```csharp, ```powershell...

Each PART of a GROUP (per document) is its own process, all started together in a
fresh temporary directory, so a two-terminal sample is two processes. Attributes:

- ``name=WORD`` (or ``name=A,B``): WORD is replaced by ``WORD-doc-<random>``, so runs
  never share an endpoint: in Python quoted (``"WORD"``, ``'WORD'``); in shell also as a
  bare word (bounded by anything but letters, digits, ``_`` and ``-``: ``--name WORD``,
  ``WORD.sock``). The block must contain WORD so.
- ``prints="a|b"``: the part prints these lines (stripped), in order, among others.
- ``stop=ctrl-c``: a server that runs until Ctrl+C. Once every other part exited (and it
  printed its ``prints``), it gets SIGINT (to its process group, on POSIX), and must end by
  it: exit 0, 130 or SIGINT, a Python part with ``KeyboardInterrupt`` as the last stderr
  line (or nothing), a shell part without a traceback. Killed on Windows (a console
  Ctrl+C cannot be aimed at one child there). Every group has a part without it.
- ``asyncio=repl``: top-level ``await``, run as ``python -m asyncio`` would (``asyncio``
  imported, the code awaited in a running loop).
- ``platform=windows`` / ``platform=posix``: run only there (skipped elsewhere, saying so).
- ``requires=MODULE``: an optional dependency (uvloop...); skipped if it is not installed.
- ``needs=CMD,CMD``: programs the sample runs that are not Python's (``mcs``, ``mono``);
  skipped, saying which, where one is not on PATH.
- ``repo=PATH,PATH``: the sample runs "from the repository root": these paths of the
  checkout (``examples``) are linked into its temporary directory, read only in spirit:
  what it builds lands in the temporary directory, never in the checkout (two suites
  run at once from one checkout).
- ``skip-lines="PREFIX|PREFIX"`` (shell): a command starting with PREFIX (a line, or one
  link of an ``&&`` chain; ``pip install`` also matches ``python3 -m pip install``) is not
  run, the rest is. The test id shows what was skipped. For installs: the test has no
  network and must not install into the interpreter it runs with.
- ``run=no reason="..."``: not run (the reason is in the test id; e.g. the README's
  install commands, which .ci/run runs on a fresh clone); checked as code only
  (``compile`` for Python, ``bash -n`` for shell).

Shell parts run with ``bash -e`` with PATH starting with a directory where ``npipes``
is ``python -m npipes`` of this interpreter and ``python``/``python3`` are this
interpreter (PYTHONPATH is inherited), so they use the checkout under test. A
```console block runs its ``$ `` lines; its other lines are expected output. Shell
samples are skipped on Windows (no bash there).
"""

from __future__ import annotations

import ast
import importlib.util
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from doc_samples import (
    DOCTEST,
    KNOWN_ATTRS,
    PYTHON,
    ROOT,
    RUNNABLE,
    SHELL,
    Block,
    Running,
    all_blocks,
    child_env,
    console_commands,
    rename,
    shell_bin,
    skip_lines,
)

DEADLINE = 90.0  # seconds for a whole group, every part
STOP_GRACE = 30.0  # seconds for a server to end after Ctrl+C
BLOCKS = all_blocks()

REPL_RUNNER = """\
import ast, asyncio, inspect, sys
path = sys.argv[1]
with open(path, encoding="utf-8") as file:
    code = compile(file.read(), path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
namespace = {"__name__": "__main__", "asyncio": asyncio}
async def main():
    result = eval(code, namespace)
    if inspect.iscoroutine(result):
        await result
asyncio.run(main())
"""

DOCTEST_RUNNER = """\
import doctest, sys
path = sys.argv[1]
with open(path, encoding="utf-8") as file:
    text = file.read()
test = doctest.DocTestParser().get_doctest(text, {"__name__": "__main__"}, path, path, 0)
runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
runner.run(test)
sys.exit(1 if runner.failures or not test.examples else 0)
"""


def _groups() -> dict[str, list[Block]]:
    groups: dict[str, list[Block]] = {}
    for block in BLOCKS:
        if block.group:
            groups.setdefault(f"{block.doc}:{block.group}", []).append(block)
        elif block.lang in DOCTEST:
            groups[f"{block.doc}:pycon-{block.line}"] = [block]
    return groups


GROUPS = _groups()


def _not_run(parts: list[Block]) -> str:
    return next((p.attrs.get("reason", "?") for p in parts if p.attrs.get("run") == "no"), "")


def _test_id(key: str) -> str:
    skipped = sorted({p.attrs["skip-lines"] for p in GROUPS[key] if "skip-lines" in p.attrs})
    return f"{key} (skips: {', '.join(skipped)})" if skipped else key


RUN = sorted(key for key, parts in GROUPS.items() if not _not_run(parts))
NOT_RUN = sorted(key for key, parts in GROUPS.items() if _not_run(parts))


def test_the_docs_have_samples() -> None:
    docs = {key.split(":")[0] for key in RUN}
    assert {"README.md", "api.md", "asyncio.md"} <= docs, RUN


def test_every_runnable_block_has_a_marker() -> None:
    problems = []
    for block in BLOCKS:
        if block.lang in RUNNABLE - DOCTEST and not block.group:
            problems.append(
                f"{block.where}: a ```{block.lang} block without a <!-- sample: ... --> marker "
                "(or use ```text / ```pycon / ```c ... if it is not code to run)"
            )
        if block.group and block.lang not in RUNNABLE:
            problems.append(f"{block.where}: a sample marker on a ```{block.lang} block")
        unknown = set(block.attrs) - KNOWN_ATTRS
        if unknown:
            problems.append(f"{block.where}: unknown marker attributes {sorted(unknown)}")
        for attr, allowed in (
            ("stop", {"ctrl-c"}),
            ("platform", {"windows", "posix"}),
            ("asyncio", {"repl"}),
            ("run", {"no"}),
        ):
            if attr in block.attrs and block.attrs[attr] not in allowed:
                problems.append(f"{block.where}: {attr}= is one of {sorted(allowed)}")
        if block.attrs.get("run") == "no" and not block.attrs.get("reason"):
            problems.append(f'{block.where}: run=no needs reason="..."')
        for name in block.names:
            if rename(block.code, [name], "x", bare=block.lang in SHELL) == block.code:
                problems.append(f"{block.where}: name={name} does not occur in the block")
    for key, parts in GROUPS.items():
        labels = [part.part for part in parts]
        if len(set(labels)) != len(labels):
            problems.append(f"{key}: two parts with one name: {labels}")
        if parts[0].group and all(part.attrs.get("stop") == "ctrl-c" for part in parts):
            problems.append(f"{key}: only stop=ctrl-c parts: nothing runs against them")
    assert not problems, "\n".join(problems)


def _skip_if_not_here(parts: list[Block]) -> None:
    for part in parts:
        platform = part.attrs.get("platform")
        if platform == "windows" and sys.platform != "win32":
            pytest.skip(f"{part.where}: a Windows-only sample (platform=windows)")
        if platform == "posix" and sys.platform == "win32":
            pytest.skip(f"{part.where}: a POSIX-only sample (platform=posix)")
        if part.lang in SHELL and (sys.platform == "win32" or not shutil.which("bash")):
            pytest.skip(f"{part.where}: shell samples run with bash, which Windows does not have")
        for program in filter(None, part.attrs.get("needs", "").split(",")):
            if shutil.which(program) is None:
                pytest.skip(f"{part.where}: needs {program}, which is not installed here")
        module = part.attrs.get("requires")
        if module and importlib.util.find_spec(module) is None:
            pytest.skip(f"{part.where}: needs {module}, an optional dependency not installed")


def _command(part: Block, code: str, tmp_path: Path) -> tuple[list[str], list[str]]:
    """The argv that runs ``part`` (code already renamed) and the lines it must print."""
    wanted = part.prints
    if part.lang in PYTHON:
        script = tmp_path / f"{part.part}.py"
        script.write_text(code, encoding="utf-8")
        if part.attrs.get("asyncio") == "repl":
            return [sys.executable, "-c", REPL_RUNNER, str(script)], wanted
        return [sys.executable, str(script)], wanted
    if part.lang in DOCTEST:
        script = tmp_path / f"{part.part or 'session'}.txt"
        script.write_text(code, encoding="utf-8")
        return [sys.executable, "-c", DOCTEST_RUNNER, str(script)], wanted
    if part.lang == "console":
        code, output = console_commands(code)
        wanted = wanted + output
    if "skip-lines" in part.attrs:
        code = skip_lines(code, part.attrs["skip-lines"].split("|"))
    script = tmp_path / f"{part.part}.sh"
    script.write_text(code, encoding="utf-8")
    # pipefail: a failing command before a pipe fails the sample (not the last one's 0)
    return ["bash", "-e", "-o", "pipefail", str(script)], wanted


@pytest.mark.timeout(DEADLINE + STOP_GRACE + 60)
@pytest.mark.parametrize("group", [pytest.param(key, id=_test_id(key)) for key in RUN])
def test_sample_runs_as_written(group: str, tmp_path: Path) -> None:
    parts = GROUPS[group]
    _skip_if_not_here(parts)
    suffix = f"doc-{uuid.uuid4().hex[:10]}"
    env = child_env(shell_bin(tmp_path / "bin"))
    work = tmp_path / "work"
    work.mkdir()
    for part in parts:
        for path in filter(None, part.attrs.get("repo", "").split(",")):
            link = work / path
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(ROOT / path, target_is_directory=(ROOT / path).is_dir())
    running: list[tuple[Block, list[str], Running]] = []
    try:
        for part in parts:
            code = rename(part.code, part.names, suffix, bare=part.lang in SHELL)
            argv, wanted = _command(part, code, tmp_path)
            running.append((part, wanted, Running(part.part, argv, work, env)))
        failures = _check(group, running)
    finally:
        for _, _, run in running:
            run.kill()
    assert not failures, "\n".join(failures)


def _check(group: str, running: list[tuple[Block, list[str], Running]]) -> list[str]:
    deadline = time.monotonic() + DEADLINE
    servers = [r for r in running if r[0].attrs.get("stop") == "ctrl-c"]
    others = [r for r in running if r[0].attrs.get("stop") != "ctrl-c"]
    assert others, f"{group}: nothing to run against the server"
    failures = []
    for part, wanted, run in others:
        code = run.finish(max(1.0, deadline - time.monotonic()))
        report = f"{part.where} ({part.part})"
        if code is None:
            failures.append(f"{report}: still running after {DEADLINE} s\n{run.out}\n{run.err}")
        elif code != 0:
            failures.append(f"{report}: exit {code}\n{run.out}\n{run.err}")
        elif (missing := run.missing(wanted)) is not None:
            failures.append(f"{report}: did not print {missing!r} (in order)\n{run.out}")
    for part, wanted, run in servers:
        report = f"{part.where} ({part.part})"
        run.wait_for(wanted, max(1.0, deadline - time.monotonic()))
        early = run.proc.poll()
        run.interrupt()
        code = run.finish(STOP_GRACE)
        err = run.err.strip()
        if code is None:
            failures.append(f"{report}: still running {STOP_GRACE} s after Ctrl+C\n{err}")
        elif early is not None and early != 0:
            failures.append(f"{report}: ended before Ctrl+C, exit {early}\n{run.out}\n{err}")
        elif sys.platform != "win32" and early is None:
            ended_by_it = code in (0, 130, -signal.SIGINT)
            if part.lang in SHELL:
                ended_by_it = ended_by_it and "Traceback" not in err
            else:
                ended_by_it = ended_by_it and err.splitlines()[-1:] in ([], ["KeyboardInterrupt"])
            if not ended_by_it:
                failures.append(f"{report}: after Ctrl+C, exit {code}\n{err}")
        if (missing := run.missing(wanted)) is not None:
            failures.append(f"{report}: did not print {missing!r} (in order)\n{run.out}\n{err}")
    return failures


@pytest.mark.parametrize(
    "group", [pytest.param(key, id=f"{key} (not run: {_not_run(GROUPS[key])})") for key in NOT_RUN]
)
def test_sample_not_run_is_valid_code(group: str, tmp_path: Path) -> None:
    for part in GROUPS[group]:
        if part.lang in PYTHON:
            compile(part.code, part.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        elif part.lang in SHELL and shutil.which("bash") and sys.platform != "win32":
            code = console_commands(part.code)[0] if part.lang == "console" else part.code
            script = tmp_path / f"{part.part}.sh"
            script.write_text(code, encoding="utf-8")
            checked = subprocess.run(
                ["bash", "-n", str(script)], capture_output=True, text=True, timeout=60, check=False
            )
            assert checked.returncode == 0, f"{part.where}: {checked.stderr}"


# -- the convention's machinery --------------------------------------------------------------


def test_markers_are_found_above_fences(tmp_path: Path) -> None:
    from doc_samples import blocks

    doc = tmp_path / "page.md"
    doc.write_text(
        '<!-- sample: g server name=jobs stop=ctrl-c prints="a|b" -->\n'
        "<!-- example: other-test -->\n"
        "```python\nprint('x')\n```\n\n"
        "- item\n\n  ```sh\n  npipes send --name jobs hi\n  ```\n\n"
        "<!-- sample: g client -->\n\n```text\nnot code\n```\n",
        encoding="utf-8",
    )
    found = blocks(doc)
    assert [(b.lang, b.group, b.part) for b in found] == [
        ("python", "g", "server"),
        ("sh", "", ""),  # indented (in a list), no marker
        ("text", "", ""),  # a blank line between marker and fence: not its marker
    ]
    assert found[0].attrs == {"name": "jobs", "stop": "ctrl-c", "prints": "a|b"}
    assert found[0].prints == ["a", "b"]
    assert found[1].code == "npipes send --name jobs hi\n"


def test_rename_replaces_quoted_names_and_in_shell_bare_words() -> None:
    code = (
        "connect(\"jobs\"); connect('jobs')\nnpipes recv --name jobs\n"
        'jobs.sock jobs2 myjobs --jobs f"jobs: {x}"'
    )
    assert rename(code, ["jobs"], "X") == (
        "connect(\"jobs-X\"); connect('jobs-X')\nnpipes recv --name jobs-X\n"
        'jobs-X.sock jobs2 myjobs --jobs f"jobs-X: {x}"'
    )
    assert rename(code, ["jobs"], "X", bare=False) == (
        "connect(\"jobs-X\"); connect('jobs-X')\nnpipes recv --name jobs\n"
        'jobs.sock jobs2 myjobs --jobs f"jobs: {x}"'
    )


def test_skip_lines_drops_only_the_named_commands() -> None:
    code = "python3 -m pip install . && npipes demo\npip install x\nnpipes ls\n"
    assert skip_lines(code, ["pip install"]) == "npipes demo\nnpipes ls\n"


def test_console_blocks_split_commands_and_output() -> None:
    commands, output = console_commands("$ for x in a b; do\n>   echo $x\n> done\na\nb\n")
    assert commands == "for x in a b; do\n  echo $x\ndone\n"
    assert output == ["a", "b"]


def _runner(runner: str, text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "code.txt"
    script.write_text(text, encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-c", runner, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_pycon_blocks_run_as_doctests(tmp_path: Path) -> None:
    assert _runner(DOCTEST_RUNNER, ">>> 1 + 1\n2\n", tmp_path).returncode == 0
    failed = _runner(DOCTEST_RUNNER, ">>> 1 + 1\n3\n", tmp_path)
    assert failed.returncode == 1
    assert "Expected" in failed.stdout


def test_asyncio_repl_runs_top_level_await(tmp_path: Path) -> None:
    done = _runner(REPL_RUNNER, "await asyncio.sleep(0)\nprint('awaited')\n", tmp_path)
    assert (done.returncode, done.stdout) == (0, "awaited\n"), done.stderr
