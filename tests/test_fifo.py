"""npipes.fifo: FIFOs for shell interop (POSIX), with real shell writers."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading

import pytest

import npipes
import npipes.fifo

pytestmark = pytest.mark.posix


def test_shell_writers_and_secure_creation(pipe_name: str) -> None:
    with npipes.fifo.open_reader(pipe_name) as reader:
        path = npipes.fifo.path(pipe_name)
        assert path.endswith(f"{pipe_name}.fifo")
        mode = os.stat(path).st_mode
        assert stat.S_ISFIFO(mode)
        assert stat.S_IMODE(mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        # Two writers one after the other: the reader sees no end in between.
        subprocess.run(
            ["sh", "-c", f"echo hello > '{path}'; printf 'a\\r\\nb' > '{path}'"],
            check=True,
            timeout=30,
        )
        assert [reader.recv(timeout=10) for _ in range(2)] == ["hello", "a"]
        with npipes.fifo.open_writer(pipe_name, timeout=10) as writer:
            writer.send("from python")
            # 'b' had no newline: it joins the next line, as in any line-based reader.
            assert reader.recv(timeout=10) == "bfrom python"
            with pytest.raises(npipes.ConnectionClosedError):
                writer.recv(timeout=1)
        with pytest.raises(npipes.ConnectionClosedError):
            reader.send("x")


def test_other_framings_and_large_messages(pipe_name: str) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, more than the FIFO buffer
    with (
        npipes.fifo.open_reader(pipe_name, framing="npipes") as reader,
        npipes.fifo.open_writer(pipe_name, framing="npipes", timeout=10) as writer,
    ):
        sender = threading.Thread(target=lambda: writer.send_many([b"", "t", payload]))
        sender.start()
        assert [reader.recv(timeout=30) for _ in range(3)] == [b"", "t", payload]
        sender.join(30)


def test_writer_without_reader_and_missing_fifo(pipe_name: str) -> None:
    with pytest.raises(npipes.PipeNotFoundError, match="no FIFO"):
        npipes.fifo.open_writer(pipe_name, timeout=0.1)
    reader = npipes.fifo.open_reader(pipe_name)
    reader.close()  # the FIFO file stays for the next reader
    with pytest.raises(npipes.PipeNotFoundError, match="nobody reads"):
        npipes.fifo.open_writer(pipe_name, timeout=0.2)


def test_reader_timeout_and_close_from_another_thread(pipe_name: str) -> None:
    with npipes.fifo.open_reader(pipe_name) as reader:
        with pytest.raises(npipes.PipeTimeoutError):
            reader.recv(timeout=0.2)
        timer = threading.Timer(0.2, reader.close)
        timer.start()
        with pytest.raises(npipes.ConnectionClosedError):
            reader.recv(timeout=30)
        timer.join()


def test_small_messages_from_many_writers_never_interleave(pipe_name: str) -> None:
    with npipes.fifo.open_reader(pipe_name) as reader:
        path = npipes.fifo.path(pipe_name)
        code = (
            "import sys, npipes.fifo\n"
            "w = npipes.fifo.open_writer(sys.argv[1], timeout=30)\n"
            "for i in range(200): w.send(sys.argv[2] * 100 + str(i))\n"
            "w.close()\n"
        )
        procs = [
            subprocess.Popen([sys.executable, "-c", code, pipe_name, letter]) for letter in "xyz"
        ]
        got = [reader.recv(timeout=30) for _ in range(600)]
        for proc in procs:
            assert proc.wait(timeout=30) == 0
        assert os.path.exists(path)
    for line in got:
        assert isinstance(line, str)
        letter = line[0]
        assert line.startswith(letter * 100)
        assert line[100:].isdigit()
