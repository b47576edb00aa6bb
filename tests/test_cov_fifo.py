"""npipes.fifo at its edges: absolute paths, what is found at the path, a reader that leaves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import npipes
import npipes.fifo

pytestmark = pytest.mark.posix


def test_absolute_path_in_a_missing_folder_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(npipes.PipeNotFoundError):
        npipes.fifo.open_reader(str(tmp_path / "no-such-dir" / "f.fifo"))


def test_absolute_path_that_is_a_regular_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "plain.fifo"
    target.write_bytes(b"secret")
    with pytest.raises(npipes.PipePermissionError, match="not a FIFO owned by you"):
        npipes.fifo.open_reader(str(target))
    assert target.read_bytes() == b"secret"  # untouched


def test_writer_to_a_directory_fails_with_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(OSError) as info:  # noqa: PT011 - the type is what is checked below
        npipes.fifo.open_writer(str(tmp_path), timeout=1)
    assert isinstance(info.value, npipes.NpipesError), repr(info.value)


def test_absolute_path_fifo_binary_frames_and_no_peer_identity(tmp_path: Path) -> None:
    path = str(tmp_path / "abs.fifo")
    with (
        npipes.fifo.open_reader(path, framing="npipes") as reader,
        npipes.fifo.open_writer(path, framing="npipes", timeout=10) as writer,
    ):
        assert writer.peer.pid is None  # a FIFO does not know who is on the other end
        writer.send(b"small frame")  # header and payload: one atomic write
        writer.send("text")
        assert reader.recv(timeout=10) == b"small frame"
        assert reader.recv(timeout=10) == "text"
    assert os.path.exists(path)  # the FIFO stays for the next reader


def test_writer_whose_reader_left_gets_connection_closed(pipe_name: str) -> None:
    reader = npipes.fifo.open_reader(pipe_name)
    writer = npipes.fifo.open_writer(pipe_name, timeout=10)
    try:
        writer.send("seen")
        assert reader.recv(timeout=10) == "seen"
        reader.close()  # no reader left: writing fails with EPIPE
        with pytest.raises(npipes.ConnectionClosedError):
            writer.send("lost", timeout=10)
    finally:
        writer.close()
        reader.close()


def test_a_reader_out_of_descriptors_gets_a_typed_error(tmp_path: Path) -> None:
    import subprocess
    import sys
    import textwrap

    child = textwrap.dedent(
        f"""
        import os, resource
        import npipes, npipes.fifo, npipes._backend.fifo  # imports need descriptors too
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        filler = []
        try:
            while True:
                filler.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        try:
            npipes.fifo.open_reader({str(tmp_path / "r.fifo")!r})
            result = "opened"
        except OSError as exc:
            result = f"{{type(exc).__name__}} {{isinstance(exc, npipes.NpipesError)}}"
        for fd in filler:  # descriptors back, for anything that runs at exit
            os.close(fd)
        print(result)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    _name, typed = done.stdout.split()
    assert typed == "True", done.stdout
