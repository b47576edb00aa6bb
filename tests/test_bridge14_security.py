"""``npipes bridge`` security: CurveZMQ keys, and plain TCP refused off the host.

Real bridge processes on the loopback interface, two pretend hosts (private
endpoint directories). Linux only.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge14_procs import TESTS, Proc, Procs, bridge, free_port, host_dir, peer
from npipes._bridge_wire import InsecureEndpointError, check_endpoint, is_loopback

if sys.platform != "win32":  # the bridge is tested on Linux (pyzmq: the dev extra)
    pytest.importorskip("zmq", reason="the bridge needs pyzmq (pip install 'npipes[bridge]')")


pytestmark = pytest.mark.posix


@pytest.fixture
def procs() -> Iterator[Procs]:
    all_procs = Procs()
    yield all_procs
    all_procs.cleanup()


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """Certificates as ``zmq.auth.create_certificates`` makes them: the binding
    bridge's, an allowed connecting bridge's, and an intruder's."""
    import zmq.auth

    made: dict[str, Path] = {}
    certs = tmp_path / "certs"
    certs.mkdir()
    clients = tmp_path / "clients"
    clients.mkdir()
    for who in ("server", "client", "intruder"):
        public, secret = zmq.auth.create_certificates(str(certs), who)
        made[who] = Path(secret)
        made[who + ".public"] = Path(public)
    (clients / "client.key").write_bytes(made["client.public"].read_bytes())
    made["clients"] = clients
    return made


def _curve_server(procs: Procs, host: Path, name: str, port: int, keys: dict[str, Path]) -> Proc:
    return procs.add(
        bridge(
            host,
            "--name",
            name,
            "--connect",
            "--zmq-bind",
            f"tcp://127.0.0.1:{port}",
            "--curve-secret-key",
            str(keys["server"]),
            "--curve-clients",
            str(keys["clients"]),
        )
    )


def test_curve_with_the_right_keys_relays(
    procs: Procs, tmp_path: Path, keys: dict[str, Path], pipe_name: str
) -> None:
    h1, h2 = host_dir(tmp_path, "h1"), host_dir(tmp_path, "h2")
    port = free_port()
    receiver = procs.add(peer(h2, "receiver", pipe_name, "echo"))
    assert receiver.next_json() == {"ready": True}
    server = _curve_server(procs, h2, pipe_name, port, keys)
    assert "curve on" in server.stderr
    procs.add(
        bridge(
            h1,
            "--name",
            pipe_name,
            "--zmq-connect",
            f"tcp://127.0.0.1:{port}",
            "--curve-secret-key",
            str(keys["client"]),
            "--curve-server-key",
            str(keys["server.public"]),
        )
    )
    sender = procs.add(peer(h1, "sender", pipe_name, "echo"))
    assert sender.until(lambda o: "echoed" in o or "mismatch" in o) == {"echoed": 305}
    assert sender.wait() == 0


@pytest.mark.parametrize("client", ["intruder", "plain", "wrong-server-key"])
def test_curve_refuses_wrong_keys(
    procs: Procs, tmp_path: Path, keys: dict[str, Path], pipe_name: str, client: str
) -> None:
    """A connecting bridge whose key is not in --curve-clients, one without
    Curve, and one expecting another server key: the handshake fails, nothing
    is relayed."""
    h1, h2 = host_dir(tmp_path, "h1"), host_dir(tmp_path, "h2")
    port = free_port()
    receiver = procs.add(peer(h2, "receiver", pipe_name, "plain"))
    assert receiver.next_json() == {"ready": True}
    server = _curve_server(procs, h2, pipe_name, port, keys)
    args = ["--name", pipe_name, "--zmq-connect", f"tcp://127.0.0.1:{port}"]
    if client == "intruder":
        args += ["--curve-secret-key", str(keys["intruder"])]
        args += ["--curve-server-key", str(keys["server.public"])]
    elif client == "wrong-server-key":
        args += ["--curve-secret-key", str(keys["client"])]
        args += ["--curve-server-key", str(keys["intruder.public"])]
    b1 = procs.add(bridge(h1, *args))
    sender = procs.add(peer(h1, "sender", pipe_name, "corrupt"))
    assert sender.until(lambda o: "connected" in o) == {"connected": True}
    if client == "plain":
        server.wait_err("link refused")
    elif client == "intruder":
        b1.wait_err("link refused")
        server.wait_err("link refused")
    else:
        server.wait_err("link refused")
    assert server.terminate() == 0
    assert "0 sent, 0 delivered" in server.stderr
    assert b1.terminate() == 0
    assert "link up" not in b1.stderr


def _run_bridge(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(TESTS.parent / "src")]))
    return subprocess.run(
        [sys.executable, "-m", "npipes", "bridge", "--name", "unused", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


@pytest.mark.parametrize(
    "where",
    [
        "--zmq-bind=tcp://0.0.0.0:{port}",
        "--zmq-bind=tcp://*:{port}",
        "--zmq-connect=tcp://192.0.2.1:{port}",
        "--zmq-connect=tcp://example.invalid:{port}",
        "--zmq-connect=tcp://127.0.0.1:1;192.0.2.1:{port}",
    ],
)
def test_off_host_plain_tcp_is_refused(where: str) -> None:
    """Exit 2 with one line saying what to do, before binding or connecting."""
    done = _run_bridge(where.format(port=free_port()))
    assert done.returncode == 2, done.stderr
    assert "--insecure" in done.stderr
    assert "curve" in done.stderr.lower()
    assert len(done.stderr.splitlines()) == 1
    assert "ready" not in done.stderr


def test_insecure_allows_off_host_plain_tcp(procs: Procs, tmp_path: Path) -> None:
    """--insecure: the bridge starts (TEST-NET-1 address: nothing answers) and
    stops cleanly on SIGTERM."""
    b = procs.add(
        bridge(
            host_dir(tmp_path, "h1"),
            "--name",
            "insecure",
            "--zmq-connect",
            "tcp://192.0.2.1:9",
            "--insecure",
        )
    )
    assert b.terminate() == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--zmq-bind=tcp://127.0.0.1:1", "--curve-server-key=x"],
        ["--zmq-connect=tcp://127.0.0.1:1", "--curve-clients=x"],
        ["--zmq-bind=tcp://127.0.0.1:1", "--curve-secret-key=x"],
        ["--zmq-connect=tcp://127.0.0.1:1", "--curve-secret-key=x"],
        ["--zmq-connect=tcp://127.0.0.1:1", "--max-queue-bytes=0"],
        ["--zmq-connect=tcp://127.0.0.1"],
        ["--zmq-bind=nonsense://x"],
        [
            "--zmq-connect=tcp://127.0.0.1:1",
            "--curve-secret-key=/nonexistent.key_secret",
            "--curve-server-key=/nonexistent.key",
        ],
        [
            "--zmq-bind=tcp://127.0.0.1:1",
            "--curve-secret-key=/nonexistent.key_secret",
            "--curve-clients=/nonexistent",
        ],
    ],
)
def test_impossible_combinations_exit_2(args: list[str]) -> None:
    done = _run_bridge(*args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("npipes bridge: ")


def test_loopback_rules() -> None:
    for endpoint in (
        "tcp://127.0.0.1:5555",
        "tcp://127.8.9.1:5555",
        "tcp://[::1]:5555",
        "tcp://localhost:5555",
        "ipc:///tmp/x",
        "inproc://x",
    ):
        assert is_loopback(endpoint), endpoint
        check_endpoint(endpoint, curve=False, insecure=False)
    for endpoint in ("tcp://10.0.0.1:5555", "tcp://*:5555", "tcp://eth0:5555", "udp://127.0.0.1:1"):
        assert not is_loopback(endpoint), endpoint
        with pytest.raises(InsecureEndpointError, match="--insecure"):
            check_endpoint(endpoint, curve=False, insecure=False)
        check_endpoint(endpoint, curve=True, insecure=False)
        check_endpoint(endpoint, curve=False, insecure=True)


def test_without_pyzmq_the_error_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['zmq'] = None\n"
        "from npipes.bridge import Bridge\n"
        "try:\n"
        "    Bridge('x', zmq_connect='tcp://127.0.0.1:1')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'npipes[bridge]'" in done.stdout


def test_endpoint_in_use_is_pipe_in_use_error(tmp_path: Path) -> None:
    # In a child: importing npipes.bridge here would add it to npipes' namespace
    # (tests/test_exports.py lists the submodules it allows).
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = (
            "import npipes\n"
            "from npipes.bridge import Bridge\n"
            "try:\n"
            f"    Bridge({str(tmp_path / 'b.sock')!r}, zmq_bind='tcp://127.0.0.1:{port}')\n"
            "except npipes.PipeInUseError as exc:\n"
            "    print('PipeInUseError', exc)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        )
    assert done.stdout.startswith("PipeInUseError"), done.stdout + done.stderr
    assert "in use" in done.stdout
