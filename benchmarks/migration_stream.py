"""`python -m benchmarks.migration_stream`: one TCP connection doing request/response without
pause, held open across a VM's moves (`benchmarks/migration`). Standard library only.

Runs in the peer's namespace: connects to `--dst`:`--port` (the VM's responder echoes every
port), then sends `--size` bytes, waits for them to come back, and sends again, for as long
as it runs. TCP_NODELAY; one request in flight.

Protocol with the parent, lines on stdin and stdout:
- prints `ready` once the first response came back (or `noreply` after `--ready-timeout`,
  and exits);
- `mark`: a window starts (answers `marked`);
- `stop`: the window ends; it waits until the next response arrives (the stream flows
  again) or `--resume-timeout` passes, and prints one JSON line: `gapMs` (the longest time
  between two consecutive responses since the last response before the mark; null if the
  stream did not resume), `resumed`, `responses` (in the window). A stream that did not
  resume is broken: it exits after that line.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import sys
import time
from dataclasses import dataclass


@dataclass
class Window:
    """The responses seen since a mark: the longest time between two of them."""

    last: float
    gap: float = 0.0
    responses: int = 0

    def response(self, now: float) -> None:
        self.gap = max(self.gap, now - self.last)
        self.last = now
        self.responses += 1

    def result(self, resumed: bool) -> dict[str, object]:
        return {
            "gapMs": round(self.gap * 1000, 1) if resumed else None,
            "resumed": resumed,
            "responses": self.responses,
        }


def run(dst: str, port: int, size: int, ready_timeout: float, resume_timeout: float) -> None:
    request = b"r" * size
    sock = socket.create_connection((dst, port), timeout=ready_timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    stdin = sys.stdin.fileno()
    os.set_blocking(stdin, False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, "sock")
    sel.register(stdin, selectors.EVENT_READ, "stdin")
    started = time.monotonic()
    last = started
    window: Window | None = None
    stop_at: float | None = None
    announced = False
    pending = b""
    got = 0
    sock.send(request)
    while True:
        for key, _ in sel.select(0.05):
            if key.data == "sock":
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as exc:  # reset: broken
                    print(json.dumps({**Window(last).result(False), "error": str(exc)}))
                    return
                if not data:
                    print(json.dumps({**Window(last).result(False), "error": "closed"}))
                    return
                got += len(data)
                while got >= size:
                    got -= size
                    now = time.monotonic()
                    last = now
                    if window is not None:
                        window.response(now)
                    sock.send(request)
            else:
                try:
                    data = os.read(stdin, 4096)
                except BlockingIOError:
                    continue
                if not data:  # the parent is gone
                    return
                pending += data
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if line.strip() == b"mark":
                        window, stop_at = Window(last), None
                        print("marked", flush=True)
                    elif line.strip() == b"stop":
                        stop_at = time.monotonic()
        now = time.monotonic()
        if not announced:
            if last > started:
                print("ready", flush=True)
                announced = True
            elif now - started > ready_timeout:
                print("noreply", flush=True)
                return
        if stop_at is not None and window is not None:
            if last > stop_at:
                print(json.dumps(window.result(True)), flush=True)
                window, stop_at = None, None
            elif now - stop_at > resume_timeout:
                print(json.dumps(window.result(False)), flush=True)
                return


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.migration_stream")
    parser.add_argument("--dst", required=True)
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--ready-timeout", type=float, default=3.0)
    parser.add_argument("--resume-timeout", type=float, default=5.0)
    args = parser.parse_args()
    run(args.dst, args.port, args.size, args.ready_timeout, args.resume_timeout)


if __name__ == "__main__":
    main()
