"""Request/reply: a server answers each request; clients call it like a function.

    python request_reply.py serve                 # terminal 1; Ctrl+C stops it
    python request_reply.py call hello world      # terminal 2: prints HELLO, WORLD

The server's function runs in the client's connection thread; an exception in it reaches
the caller as ``npipes.RemoteError`` and the server goes on (try ``call fail``).
"""

from __future__ import annotations

import argparse

import npipes


def answer(message: bytes | str) -> bytes | str:
    if message == "fail":
        raise ValueError("asked to fail")
    return message.upper()  # text stays text, bytes stay bytes


def serve(name: str) -> None:
    with npipes.serve(name, respond=answer) as server:
        print("serving; Ctrl+C stops", flush=True)
        server.serve_forever()


def call(name: str, words: list[str]) -> None:
    with npipes.connect(name, timeout=30, wait_for_listener=True) as conn:
        for word in words:
            try:
                print(conn.request(word, timeout=30))
            except npipes.RemoteError as exc:
                print(f"error: {exc.remote_type}: {exc.remote_message}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("role", choices=["serve", "call"])
    parser.add_argument("words", nargs="*", help="requests to send (call)")
    parser.add_argument("--name", default="upper", help="pipe name (default: upper)")
    args = parser.parse_intermixed_args()
    if args.role == "serve":
        serve(args.name)
    else:
        call(args.name, args.words)


if __name__ == "__main__":
    main()
