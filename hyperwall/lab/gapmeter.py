"""`python -m hyperwall.lab.gapmeter`: how long a VM's traffic could not flow during a move.

Runs inside the VM's namespace (started by `lab.migrate`, like the responders: standard
library only, to start fast). It sends a UDP datagram every `--interval` seconds (1 ms) from
`--src` to a responder's echo service (`--dst`, `--port`: the responders echo UDP on port 7
and the namespace's redirect sends every other port there) and records when each echo
arrives.

Protocol with the parent: prints `ready` once the first echo came back (or `noreply` after
`--ready-timeout`), then keeps streaming until its stdin closes (the parent's "the move is
done"); it goes on until the next echo arrives (the traffic flows again) or `--resume-
timeout` passes, and prints one JSON line: `gapMs` (the longest time between two
consecutive echoes, from the first echo to that last one; null if the traffic did not
resume), `sent`, `received`, `resumed`.

The resolution is the interval plus the round trip (about 1-2 ms in the lab); a gap shorter
than that cannot be told from the stream's own rhythm.

`--proto tcp`: the same over one TCP connection (`TCP_NODELAY`; 8 bytes per send, an echo
counted per 8 bytes back), for a path the policy opens for TCP only (a real guest's echo
port, measured from the external namespace by `lab.guest_migrate`). The connection must
survive: `broken` says whether it was reset or closed (then `gapMs` is null). A TCP gap
includes the sender's retransmission timeout (at least 200 ms) when segments were lost.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import socket
import struct
import sys
import time
from dataclasses import dataclass


@dataclass
class Stream:
    sent: int = 0
    received: int = 0
    first: float | None = None
    last: float | None = None
    gap: float = 0.0

    def echo(self, now: float) -> None:
        if self.last is not None:
            self.gap = max(self.gap, now - self.last)
        if self.first is None:
            self.first = now
        self.last = now
        self.received += 1


def _socket(src: str, dst: str, port: int, proto: str = "udp") -> socket.socket:
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    sock.bind((src, 0))
    if proto == "tcp":
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(5.0)
    sock.connect((dst, port))
    sock.setblocking(False)
    return sock


def run(
    src: str,
    dst: str,
    port: int,
    interval: float,
    ready_timeout: float,
    resume_timeout: float,
    proto: str = "udp",
) -> dict[str, object]:
    sock = _socket(src, dst, port, proto)
    pending = 0  # TCP: echoed bytes not yet a whole echo
    broken = False
    stdin = sys.stdin.fileno()
    os.set_blocking(stdin, False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, "sock")
    sel.register(stdin, selectors.EVENT_READ, "stdin")
    stream = Stream()
    started = time.monotonic()
    next_send = started
    stop_at: float | None = None
    announced = False
    while True:
        now = time.monotonic()
        if now >= next_send:
            with contextlib.suppress(OSError):  # the link is down or moving: lost, go on
                if not broken:
                    sock.send(struct.pack("!Q", stream.sent))
            stream.sent += 1
            next_send = max(next_send + interval, now)
        for key, _ in sel.select(max(0.0, next_send - time.monotonic())):
            if key.data == "sock":
                while not broken:
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        break
                    except OSError:  # UDP: an ICMP error queued on the socket, not an echo
                        if proto != "tcp":
                            continue
                        data = b""
                    if proto != "tcp":
                        stream.echo(time.monotonic())
                        continue
                    if not data:  # reset or closed: the connection did not survive
                        broken = True
                        sel.unregister(sock)
                        break
                    pending += len(data)
                    if pending >= 8:
                        pending %= 8
                        stream.echo(time.monotonic())
            else:
                try:
                    data = os.read(stdin, 4096)
                except BlockingIOError:
                    data = b"x"
                if not data:
                    sel.unregister(stdin)
                    stop_at = time.monotonic()
        now = time.monotonic()
        if not announced:
            if stream.first is not None:
                print("ready", flush=True)
                announced = True
            elif now - started > ready_timeout:
                print("noreply", flush=True)
                announced = True
        if stop_at is not None:
            resumed = stream.last is not None and stream.last > stop_at and not broken
            if resumed or broken or now - stop_at > resume_timeout:
                result: dict[str, object] = {
                    "gapMs": round(stream.gap * 1000, 1) if resumed else None,
                    "sent": stream.sent,
                    "received": stream.received,
                    "resumed": resumed,
                }
                if proto == "tcp":
                    result["broken"] = broken
                return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m hyperwall.lab.gapmeter")
    parser.add_argument("--src", required=True)
    parser.add_argument("--dst", required=True)
    parser.add_argument("--port", type=int, default=7)
    parser.add_argument("--interval", type=float, default=0.001)
    parser.add_argument("--ready-timeout", type=float, default=3.0)
    parser.add_argument("--resume-timeout", type=float, default=10.0)
    parser.add_argument("--proto", choices=("udp", "tcp"), default="udp")
    args = parser.parse_args()
    result = run(
        args.src,
        args.dst,
        args.port,
        args.interval,
        args.ready_timeout,
        args.resume_timeout,
        args.proto,
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
