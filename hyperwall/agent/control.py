"""The agent's local control socket: how the host's hypervisor side drives a migration.

`STATE_DIR/control.sock`, a unix socket only root can use (mode 0600, in a root-owned
folder): whoever may use it already owns the host. JSON lines, one request and one answer
per connection:

- `{"op": "ping"}` -> `{"ok": true, "pid": N}`
- `{"op": "incoming", "vm": KEY, "from": HOST, "key": HEX}` (destination): program the VM's
  rules here before it arrives, and accept its connection state from HOST's agent, proven
  by the one-time key. Answers when the rules are in the kernel.
- `{"op": "send", "vm": KEY, "to": HOST, "address": "IP:PORT", "key": HEX,
  "phase": "precopy" | "switchover"}` (source): send the VM's connection entries (all of
  them at precopy, what changed since at switchover) to the destination's agent. Answers
  with the counts.
- `{"op": "done", "vm": KEY}` (destination): the documents now place the VM here; drop the
  incoming overlay and the key.
- `{"op": "release", "vm": KEY, "addresses": [IP...]}` (source): the VM has left (after
  the switchover's send, or without its state); remove its connection entries here
  (`addresses`: optional, for a VM the agent no longer knows, e.g. its domain has left).

The operations themselves live in `agent.migration` (`Migrations`); this module is the
socket (server and client) only. Counterpart of `lab.migrate`, which calls it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any]], dict[str, Any]]
MAX_REQUEST = 1 << 16
TIMEOUT = 120.0


class ControlError(Exception):
    """The agent answered with an error, or could not be reached."""


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    handle: Handler


class _Request(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline(MAX_REQUEST)
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
            answer = self.server.handle(request)  # type: ignore[attr-defined]
        except Exception as exc:  # every failure is an answer, never a dead socket
            answer = {"ok": False, "error": str(exc) or type(exc).__name__}
        self.wfile.write(json.dumps(answer).encode() + b"\n")


class ControlServer:
    def __init__(self, path: Path, handle: Handler) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        old = os.umask(0o077)
        try:
            self.server = _Server(str(path), _Request)
        finally:
            os.umask(old)
        self.server.handle = handle
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="agent-control", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def json_line_request(
    path: Path,
    message: dict[str, Any],
    timeout: float,
    connect: Callable[[socket.socket, Path], None] | None = None,
) -> Any:
    """One JSON line to the unix socket at `path`, one JSON line back (decoded): the shape
    of the agent's control socket and of the lab's responders. OSError, ValueError."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        if connect is None:
            s.connect(str(path))
        else:
            connect(s, path)
        s.sendall(json.dumps(message).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


class ControlClient:
    def __init__(self, path: Path, timeout: float = TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request; its answer, or ControlError with the agent's reason."""
        try:
            answer = json_line_request(self.path, request, self.timeout)
        except OSError as exc:
            raise ControlError(f"agent control socket {self.path}: {exc}") from None
        except ValueError:
            raise ControlError(f"agent control socket {self.path}: no answer") from None
        if not isinstance(answer, dict) or not answer.get("ok"):
            error = answer.get("error") if isinstance(answer, dict) else answer
            raise ControlError(f"agent refused {request.get('op')!r}: {error}")
        return answer

    def ping(self) -> dict[str, Any]:
        return self.call({"op": "ping"})

    def incoming(self, vm: str, source: str, key: str) -> dict[str, Any]:
        return self.call({"op": "incoming", "vm": vm, "from": source, "key": key})

    def send(self, vm: str, dest: str, address: str, key: str, phase: str) -> dict[str, Any]:
        return self.call(
            {"op": "send", "vm": vm, "to": dest, "address": address, "key": key, "phase": phase}
        )

    def done(self, vm: str) -> dict[str, Any]:
        return self.call({"op": "done", "vm": vm})

    def release(self, vm: str, addresses: tuple[str, ...] = ()) -> dict[str, Any]:
        return self.call({"op": "release", "vm": vm, "addresses": list(addresses)})
