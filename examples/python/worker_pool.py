"""A worker pool: one dispatcher hands out jobs, worker processes take them.

    python worker_pool.py dispatch --jobs 20 --workers 2   # terminal 1
    python worker_pool.py work                             # terminals 2 and 3 (any order)

Each worker asks for work with a request ("ready", then each result) and gets the next job
as the reply, or "done" once none is left, so a fast worker simply takes more jobs. The
dispatcher prints every result and ends once it told ``--workers`` workers "done".
"""

from __future__ import annotations

import argparse
import json
import os
import threading

import npipes


def dispatch(name: str, jobs: int, workers: int) -> None:
    todo = list(range(1, jobs + 1))
    results: dict[int, int] = {}
    finished = 0
    lock = threading.Lock()
    all_done = threading.Event()

    def respond(message: bytes | str) -> str:
        # Called in each worker's connection thread: the lock guards the shared state.
        nonlocal finished
        with lock:
            if message != "ready":
                result = json.loads(message)  # JSON text
                results[result["job"]] = result["square"]
            if todo:
                return json.dumps({"job": todo.pop(0)})
            finished += 1
            if finished == workers:
                all_done.set()
            return "done"

    with npipes.serve(name, respond=respond):
        all_done.wait()  # the replies went out before serve's close() below
    for job in sorted(results):
        print(f"job {job}: {results[job]}")
    print(f"{len(results)} jobs done by {workers} workers")


def work(name: str) -> None:
    done = 0
    with npipes.connect(name, timeout=30, wait_for_listener=True) as conn:
        reply = conn.request("ready", timeout=30)
        while reply != "done":
            job = json.loads(reply)["job"]
            result = {"job": job, "square": job * job}  # the work
            done += 1
            reply = conn.request(json.dumps(result), timeout=30)
    print(f"worker {os.getpid()} did {done} jobs")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("role", choices=["dispatch", "work"])
    parser.add_argument("--name", default="pool", help="pipe name (default: pool)")
    parser.add_argument("--jobs", type=int, default=20, help="jobs to hand out (dispatch)")
    parser.add_argument("--workers", type=int, default=2, help="workers to wait for (dispatch)")
    args = parser.parse_args()
    if args.role == "dispatch":
        dispatch(args.name, args.jobs, args.workers)
    else:
        work(args.name)


if __name__ == "__main__":
    main()
