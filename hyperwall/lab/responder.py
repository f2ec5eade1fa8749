"""`python -m hyperwall.lab.responder`: the process in every lab VM (and the external) namespace.

- Echo service on port 7 (TCP and UDP); the namespace's nft table redirects every other
  TCP/UDP port here, so any port answers. With `--listen ADDR` it binds each of the VM's own
  addresses (UDP replies must leave from the address the request came to; with several
  interfaces a wildcard socket would pick the main route's source); without, one dual-stack
  wildcard socket (the external namespace, whose single link owns every outside address).
- Control socket (unix, in the lab's state folder): JSON lines. `{"op": "ping"}` answers
  `{"ok": true, "pid": N}`; a `ProbeRequest` runs a probe from this namespace and answers
  a `ProbeOutcome`. One request per connection, each in its own thread, so blocked probes
  wait in parallel.

ICMP echo is answered by the kernel. Standard library only, to start fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import socketserver
import sys
import threading
from types import FrameType
from typing import Any

from hyperwall.lab.probe_messages import ProbeOutcome, ProbeRequest
from hyperwall.lab.probes import run_probe

PORT = 7


def _listener(address: str | None, kind: socket.SocketKind, port: int) -> socket.socket:
    if address is None:
        s = socket.socket(socket.AF_INET6, kind)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        address = "::"
    else:
        s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, port))
    if kind == socket.SOCK_STREAM:
        s.listen(128)
    return s


def _echo_stream(conn: socket.socket) -> None:
    with conn:
        conn.settimeout(30)
        with contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)


def _serve_tcp(server: socket.socket) -> None:
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        threading.Thread(target=_echo_stream, args=(conn,), daemon=True).start()


def _serve_udp(server: socket.socket) -> None:
    while True:
        try:
            data, peer = server.recvfrom(65536)
            server.sendto(data, peer)
        except OSError:
            continue


def answer(message: dict[str, Any]) -> dict[str, Any]:
    """The reply to one control message."""
    op = message.get("op")
    if op == "ping":
        return {"ok": True, "pid": os.getpid()}
    if op == "probe":
        try:
            request = ProbeRequest.from_json(message)
        except (KeyError, ValueError, TypeError) as exc:
            return ProbeOutcome("error", f"bad probe request: {exc}").to_json()
        return run_probe(request).to_json()
    return {"ok": False, "error": f"unknown op {op!r}"}


class _Control(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline()
        try:
            message = json.loads(line)
            reply = answer(message) if isinstance(message, dict) else {"error": "not an object"}
        except ValueError as exc:
            reply = {"ok": False, "error": f"bad JSON: {exc}"}
        self.wfile.write(json.dumps(reply).encode() + b"\n")


class _ControlServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    request_queue_size = 1024  # the lab sends hundreds of probes at once


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hyperwall.lab.responder")
    parser.add_argument("--socket", required=True, help="control socket path")
    parser.add_argument("--listen", action="append", default=[], help="address (repeatable)")
    parser.add_argument("--port", type=int, default=PORT)
    args = parser.parse_args(argv)

    addresses: list[str | None] = list(args.listen) or [None]
    for address in addresses:
        for kind, serve in ((socket.SOCK_STREAM, _serve_tcp), (socket.SOCK_DGRAM, _serve_udp)):
            server = _listener(address, kind, args.port)
            threading.Thread(target=serve, args=(server,), daemon=True).start()

    with contextlib.suppress(FileNotFoundError):
        os.unlink(args.socket)
    serve_until_stopped(_ControlServer(args.socket, _Control), args.socket)


def serve_until_stopped(control: socketserver.BaseServer, path: str) -> None:
    """Serve a control socket until SIGTERM/SIGINT, then remove it and exit 0 (also the
    guest proxy's, `lab.guest_proxy`)."""

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=control.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        control.serve_forever(poll_interval=0.5)
    finally:
        control.server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    sys.exit(0)


if __name__ == "__main__":
    main()
