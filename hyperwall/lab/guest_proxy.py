"""`python -m hyperwall.lab.guest_proxy`: the host side of a lab guest's control channel.

A guest's control channel is one virtio-serial port (`<channel type='unix'>`, name
`hyperwall.control`): a single byte stream, whose host end (QEMU's unix socket) takes one
client at a time. This proxy is that client. It listens on the lab's usual control socket
(`STATE/sock/vN.sock`) and speaks the responders' JSON lines there, one request per
connection, each in its own thread (`lab.responder_client` works unchanged), and multiplexes
the requests over the channel, tagged with an id, in the guest agent's line format (TAB-
separated, see `guest/hwguest.c`). Replies come back in any order and are matched by id.

Ops: `{"op": "ping"}` (answered by the guest: `ok` only once the guest runs), probe requests
(`probe_messages.ProbeRequest` -> `ProbeOutcome`), and `{"op": "exec", "argv": [...], "stdin":
"...", "timeout": S}` -> `{"returncode": N, "stdout": "...", "stderr": "..."}` (argv is run by
the guest's `sh -c` after shell quoting). Standard library only, like the responder.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shlex
import socket
import socketserver
import threading
from typing import Any

from hyperwall.lab.probe_messages import ProbeOutcome, ProbeRequest
from hyperwall.lab.responder import serve_until_stopped

SLACK = 4.0  # seconds beyond a probe's own timeout before the proxy gives up on the guest
PING_TIMEOUT = 0.8


class ChannelError(OSError):
    pass


class Channel:
    """The one connection to QEMU's end of the virtio-serial port, shared by all requests."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._pending: dict[str, tuple[threading.Event, list[list[str]]]] = {}
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid()}."

    def _connected(self) -> socket.socket:
        with self._lock:
            if self._sock is None:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(self.path)
                except OSError as exc:
                    s.close()
                    raise ChannelError(f"channel {self.path}: {exc}") from None
                self._sock = s
                threading.Thread(target=self._read, args=(s,), daemon=True).start()
            return self._sock

    def _read(self, s: socket.socket) -> None:
        buffer = b""
        try:
            while chunk := s.recv(1 << 16):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    fields = line.decode(errors="replace").split("\t")
                    waiter = self._pending.get(fields[0])
                    if waiter is not None:
                        waiter[1].append(fields[1:])
                        waiter[0].set()
        except OSError:
            pass
        with self._lock:
            if self._sock is s:
                self._sock = None
        s.close()
        for event, _ in list(self._pending.values()):
            event.set()  # their reply will not come on this connection

    def call(self, fields: list[str], timeout: float) -> list[str]:
        """Send one request (fields after the id); the reply's fields after the id."""
        ident = f"{self._prefix}{next(self._ids)}"
        event: threading.Event = threading.Event()
        box: list[list[str]] = []
        self._pending[ident] = (event, box)
        try:
            s = self._connected()
            line = "\t".join([ident, *fields]).encode() + b"\n"
            with self._lock:
                s.sendall(line)
            if not event.wait(timeout) or not box:
                raise ChannelError("the guest did not answer")
            return box[0]
        finally:
            self._pending.pop(ident, None)


def _probe(channel: Channel, request: ProbeRequest) -> ProbeOutcome:
    fields = ["probe", request.proto, request.src, request.dst, str(request.port)]
    fields.append(str(max(1, round(request.timeout * 1000))))
    reply = channel.call(fields, request.timeout + SLACK)
    return ProbeOutcome.from_json({"result": reply[0], "detail": "\t".join(reply[1:])})


def _exec(channel: Channel, message: dict[str, Any]) -> dict[str, Any]:
    argv = [str(a) for a in message["argv"]]
    timeout = float(message.get("timeout", 30))
    stdin = str(message.get("stdin") or "").encode()
    fields = ["exec", str(round(timeout * 1000)), shlex.join(argv).encode().hex(), stdin.hex()]
    reply = channel.call(fields, timeout + SLACK)
    if reply[0] != "exit" or len(reply) < 4:
        return {"ok": False, "error": f"bad exec reply {reply!r}"}
    return {
        "ok": True,
        "returncode": int(reply[1]),
        "stdout": bytes.fromhex(reply[2]).decode(errors="replace"),
        "stderr": bytes.fromhex(reply[3]).decode(errors="replace"),
    }


def answer(channel: Channel, message: dict[str, Any]) -> dict[str, Any]:
    op = message.get("op")
    try:
        if op == "ping":
            reply = channel.call(["ping"], PING_TIMEOUT)
            return {"ok": reply[0] == "pong", "pid": os.getpid(), "guest": True}
        if op == "probe":
            try:
                request = ProbeRequest.from_json(message)
            except (KeyError, ValueError, TypeError) as exc:
                return ProbeOutcome("error", f"bad probe request: {exc}").to_json()
            return _probe(channel, request).to_json()
        if op == "exec":
            return _exec(channel, message)
    except ChannelError as exc:
        if op == "probe":
            return ProbeOutcome("error", str(exc)).to_json()
        return {"ok": False, "error": str(exc)}
    return {"ok": False, "error": f"unknown op {op!r}"}


class _Control(socketserver.StreamRequestHandler):
    server: _ControlServer

    def handle(self) -> None:
        line = self.rfile.readline()
        try:
            message = json.loads(line)
            if isinstance(message, dict):
                reply = answer(self.server.channel, message)
            else:
                reply = {"ok": False, "error": "not an object"}
        except ValueError as exc:
            reply = {"ok": False, "error": f"bad JSON: {exc}"}
        self.wfile.write(json.dumps(reply).encode() + b"\n")


class _ControlServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, path: str, channel: Channel) -> None:
        self.channel = channel
        super().__init__(path, _Control)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hyperwall.lab.guest_proxy")
    parser.add_argument("--socket", required=True, help="the lab's control socket (listen)")
    parser.add_argument("--channel", required=True, help="QEMU's end of the guest's channel")
    args = parser.parse_args(argv)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(args.socket)
    serve_until_stopped(_ControlServer(args.socket, Channel(args.channel)), args.socket)


if __name__ == "__main__":
    main()
