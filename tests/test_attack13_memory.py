"""Attack (issue 13): memory of the accelerated send path. Sending a ``str`` must not
leave a UTF-8 copy attached to it: an application that keeps the strings it sent
(a cache of replies, interned names) would otherwise hold up to 4 extra bytes per
character for as long as each string lives, accelerated only. Real connection,
separate process (VmRSS from /proc), Linux.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.posix,
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)"),
]

SRC = str(Path(__file__).resolve().parents[1] / "src")

SCRIPT = """
import json, sys, threading, npipes

def rss():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024

name, how = sys.argv[1], sys.argv[2]
count = 3000
kept = [("\\u00e9" * 16000) + str(i) for i in range(count)]  # kept alive after sending
with npipes.listen(name) as listener:
    client = npipes.connect(name, timeout=60)
    server = listener.accept(timeout=60)

    def drain():
        for _ in range(count):
            server.recv(timeout=60)

    reader = threading.Thread(target=drain)
    reader.start()
    before = rss()
    if how == "send_many":
        for start in range(0, count, 10):
            client.send_many(kept[start : start + 10], timeout=60)
    else:
        for text in kept:
            client.send(text, timeout=60)
    reader.join(60)
    print(json.dumps({"growth_mib": rss() - before, "alive": len(kept)}))
    client.close()
    server.close()
"""


@pytest.mark.parametrize("pure", [False, True], ids=["accel", "pure"])
@pytest.mark.parametrize("how", ["send", "send_many"])
def test_sent_strings_keep_no_utf8_copy(pipe_name: str, how: str, pure: bool) -> None:
    env = dict(os.environ)
    env["NPIPES_PURE_PYTHON"] = "1" if pure else "0"
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, pipe_name, how],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout)
    # 3000 strings of 16000 "é": a UTF-8 copy of each would be 91 MiB more.
    assert result["growth_mib"] < 30, result
