"""send_json/recv_json and send_pyobj/recv_pyobj between real processes (issue 12 §4)."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import threading

import pytest

import npipes
import npipes.aio
import object_peers
from helpers import finish, start
from npipes import PickleNotAllowedError, ProtocolError
from object_peers import Point

WAIT = 30.0
VALUE = {"id": 7, "tags": ["a", "é", "€"], "nested": {"ok": True, "none": None, "pi": 3.5}}


def test_json_and_pickle_round_trip_between_processes(pipe_name: str) -> None:
    obj = {"point": Point(1, 2), "set": {1, 2, 3}, "bytes": b"\x00\xff"}
    with npipes.listen(pipe_name, allow_pickle=True) as listener:
        proc = start(object_peers.echo_objects, pipe_name, True)
        with listener.accept(timeout=WAIT) as conn:
            conn.send_json(VALUE, timeout=WAIT)
            assert conn.recv_json(timeout=WAIT) == VALUE
            conn.send_pyobj(obj, timeout=WAIT)
            assert conn.recv_pyobj(timeout=WAIT) == obj
            conn.send("done")
        assert finish(proc) == 0


def test_json_is_a_utf8_text_frame_any_language_reads(pipe_name: str) -> None:
    with (
        npipes.listen(pipe_name) as listener,
        npipes.connect(pipe_name, timeout=WAIT) as client,
        listener.accept(WAIT) as server,
    ):
        client.send_json(VALUE)
        raw = server.recv(timeout=WAIT)
        assert isinstance(raw, str)
        assert json.loads(raw) == VALUE
        assert "é" in raw  # UTF-8 on the wire, not \\u escapes
        server.send(json.dumps([1, 2]).encode())  # a peer sending JSON as binary
        assert client.recv_json(timeout=WAIT) == [1, 2]


def test_recv_pyobj_refused_without_allow_pickle_and_nothing_is_consumed(
    pipe_name: str, tmp_path: os.PathLike[str]
) -> None:
    marker = os.path.join(tmp_path, "pwned")
    with npipes.listen(pipe_name) as listener:
        proc = start(object_peers.send_evil_pickle, pipe_name, marker)
        with listener.accept(timeout=WAIT) as conn:
            assert conn.allow_pickle is False
            with pytest.raises(PickleNotAllowedError, match="allow_pickle=True") as info:
                conn.recv_pyobj(timeout=WAIT)
            assert isinstance(info.value, PermissionError)
            # Nothing was received: the pickle is still the next message, as bytes.
            raw = conn.recv(timeout=WAIT)
            assert isinstance(raw, bytes)
            assert raw.startswith(b"\x80")
            assert conn.recv_json(timeout=WAIT) == {"after": True}
            conn.send("done")
        assert finish(proc) == 0
    assert not os.path.exists(marker)


def test_recv_pyobj_refused_on_a_connecting_side_too(pipe_name: str) -> None:
    with (
        npipes.listen(pipe_name, allow_pickle=True) as listener,
        npipes.connect(pipe_name, timeout=WAIT) as client,
        listener.accept(WAIT) as server,
    ):
        server.send_pyobj([1])
        with pytest.raises(PickleNotAllowedError):
            client.recv_pyobj(timeout=WAIT)
        assert client.recv(timeout=WAIT) == pickle.dumps([1], pickle.HIGHEST_PROTOCOL)


def test_type_errors_name_what_is_accepted(pipe_name: str) -> None:
    with (
        npipes.listen(pipe_name, allow_pickle=True) as listener,
        npipes.connect(pipe_name, timeout=WAIT) as client,
        listener.accept(WAIT) as server,
    ):
        with pytest.raises(TypeError, match="send_json accepts dict, list"):
            client.send_json({"lock": threading.Lock()})
        with pytest.raises(TypeError, match="send_pyobj accepts picklable objects"):
            client.send_pyobj(threading.Lock())
        with pytest.raises(TypeError, match="send_pyobj accepts picklable objects"):
            client.send_pyobj(lambda: None)
        with pytest.raises(TypeError, match="protocol"):
            client.send_pyobj(1, protocol="5")  # type: ignore[arg-type]
        cycle: list[object] = []
        cycle.append(cycle)
        with pytest.raises(ValueError, match="send_json"):
            client.send_json(cycle)
        # Nothing of the refused sends went out; the connection is fine.
        client.send_json("ok")
        assert server.recv_json(timeout=WAIT) == "ok"


def test_bad_payloads_fail_that_message_only(pipe_name: str) -> None:
    with (
        npipes.listen(pipe_name, allow_pickle=True) as listener,
        npipes.connect(pipe_name, timeout=WAIT, allow_pickle=True) as client,
        listener.accept(WAIT) as server,
    ):
        server.send("{not json")
        server.send(b"\xff\xfe")
        server.send("text, not a pickle")
        server.send(b"not a pickle")
        server.send_json({"n": 1})
        server.send_pyobj({"n": 2})
        with pytest.raises(ProtocolError, match="not JSON"):
            client.recv_json(timeout=WAIT)
        with pytest.raises(ProtocolError, match="not JSON"):
            client.recv_json(timeout=WAIT)
        with pytest.raises(ProtocolError, match="text message"):
            client.recv_pyobj(timeout=WAIT)
        with pytest.raises(ProtocolError, match="could not unpickle"):
            client.recv_pyobj(timeout=WAIT)
        assert not client.closed
        assert client.recv_json(timeout=WAIT) == {"n": 1}
        assert client.recv_pyobj(timeout=WAIT) == {"n": 2}


def test_allow_pickle_option_is_checked() -> None:
    with pytest.raises(TypeError, match="allow_pickle must be True or False"):
        npipes.connect("x", allow_pickle=1)  # type: ignore[typeddict-item]


def test_aio_objects_round_trip_between_processes(pipe_name: str) -> None:
    async def main() -> None:
        listener = await npipes.aio.listen(pipe_name, allow_pickle=True)
        async with listener:
            proc = start(object_peers.aio_echo_objects, pipe_name)
            conn = await listener.accept(timeout=WAIT)
            async with conn:
                await conn.send_json(VALUE)
                assert await conn.recv_json(timeout=WAIT) == VALUE
                await conn.send_pyobj(Point(3, 4))
                assert await conn.recv_pyobj(timeout=WAIT) == Point(3, 4)
                await conn.send("done")
            assert await asyncio.to_thread(finish, proc) == 0

    asyncio.run(main())


def test_aio_recv_pyobj_refused_without_allow_pickle(pipe_name: str) -> None:
    async def main() -> None:
        listener = await npipes.aio.listen(pipe_name)
        async with listener:
            client = await npipes.aio.connect(pipe_name, timeout=WAIT)
            server = await listener.accept(timeout=WAIT)
            async with client, server:
                await client.send_pyobj([1, 2])
                with pytest.raises(PickleNotAllowedError):
                    await server.recv_pyobj(timeout=WAIT)
                assert isinstance(await server.recv(timeout=WAIT), bytes)
                with pytest.raises(TypeError, match="send_json accepts"):
                    await client.send_json(object())

    asyncio.run(main())
