"""Publish/subscribe: one publisher, every subscriber gets every message after it joined.

    python pubsub.py publish --subscribers 2 --count 5   # terminal 1
    python pubsub.py subscribe                           # terminals 2 and 3

The publisher waits until ``--subscribers`` subscribers are connected, sends ``--count``
messages and closes; each subscriber prints what it gets until the publisher closes. A
subscriber that stops reading is dropped (SlowSubscriberError) and never slows the others.
"""

from __future__ import annotations

import argparse
import time

import npipes


def publish(name: str, subscribers: int, count: int) -> None:
    with npipes.publish(name) as pub:
        while pub.subscribers < subscribers:
            time.sleep(0.05)
        for number in range(count):
            pub.send(f"tick {number}")
    print(f"published {count} messages to {subscribers} subscribers")


def subscribe(name: str) -> None:
    with npipes.subscribe(name, timeout=30, wait_for_publisher=True) as sub:
        for message in sub:  # ends when the publisher closes
            print(message)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("role", choices=["publish", "subscribe"])
    parser.add_argument("--name", default="ticks", help="pipe name (default: ticks)")
    parser.add_argument("--subscribers", type=int, default=1, help="to wait for (publish)")
    parser.add_argument("--count", type=int, default=5, help="messages to send (publish)")
    args = parser.parse_args()
    if args.role == "publish":
        publish(args.name, args.subscribers, args.count)
    else:
        subscribe(args.name)


if __name__ == "__main__":
    main()
