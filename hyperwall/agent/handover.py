"""Agent to agent: a migrating VM's connection state, sent from the source host's agent to
the destination's over the underlay, authenticated both ways by a one-time key.

The orchestrator (the hypervisor side: `lab migrate`, a libvirt hook) gives the same random
key to both agents over their local control sockets (`agent.control`): the destination's
with `incoming`, the source's with `send`. Only the holder of the key can send this VM's
state to the destination (the source proves it), and the source sends only after the
other end proved it holds the key too (so only the destination receives it). Nothing on
the wire is trusted before its proof checks; a key is good for one VM only.

One TCP connection per phase; frames are a 4-byte big-endian length and a payload:

    source -> dest   {"vm", "phase", "nonce": NC}
    dest -> source   {"nonce": NS, "proof": H(key, "dst" vm phase NC NS)}   or {"error"}
    source -> dest   {"proof": H(key, "src" ...)}
    source -> dest   per chunk i: {"size": N, "mac": H(key, "chunk" ... i sha256(chunk))},
                     then the chunk: N bytes (`agent.migration`'s encoding)
    source -> dest   {"size": 0, "mac": H(key, "end" ... count)}
    dest -> source   {"ok": true, "applied": K, "proof": H(key, "ack" ... K)}  or {"error"}

H is HMAC-SHA256. The state goes in chunks so that the destination injects one while the
source still reads the next out of its kernel (a 100,000-entry precopy: the two hosts'
work overlaps). Each chunk is proven before it is applied (`apply` runs per chunk); the end
frame proves the count, so a stream cut short is refused, but the chunks applied before
the cut stay applied (copies of the VM's entries; the phase is reported failed). The
answer comes after the last chunk is applied, so when `send_state` returns the entries are
in the destination's kernel.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
import socket
import socketserver
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

MAX_FRAME = 512 << 20  # the state of a VM with well over a million connections
TIMEOUT = 60.0
# (vm, phase, state bytes) -> how many entries were applied; raises to refuse
Apply = Callable[[str, str, bytes], int]


class HandoverError(Exception):
    """The other end refused, failed its proof, or could not be reached."""


def _mac(key: str, *parts: str | bytes) -> str:
    h = hmac.new(bytes.fromhex(key), digestmod=hashlib.sha256)
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(struct.pack("!I", len(data)) + data)
    return h.hexdigest()


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack("!I", len(payload)) + payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise HandoverError("connection closed mid-frame")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _recv(sock: socket.socket, limit: int = MAX_FRAME) -> bytes:
    (size,) = struct.unpack("!I", _recv_exact(sock, 4))
    if size > limit:
        raise HandoverError(f"frame of {size} bytes is over the limit of {limit}")
    return _recv_exact(sock, size)


def _json(sock: socket.socket) -> dict[str, Any]:
    try:
        value = json.loads(_recv(sock, 1 << 16))
    except ValueError as exc:
        raise HandoverError(f"bad frame: {exc}") from None
    if not isinstance(value, dict):
        raise HandoverError("bad frame: not an object")
    return value


def _send_json(sock: socket.socket, value: dict[str, Any]) -> None:
    _send(sock, json.dumps(value).encode())


@dataclass(frozen=True, slots=True)
class Sent:
    applied: int
    size: int


def send_state(address: str, vm: str, key: str, phase: str, state: bytes | Iterable[bytes]) -> Sent:
    """Send `state` (one chunk, or chunks as they are made) to the destination agent at
    `address` (`IP:PORT`, IPv6 in brackets)."""
    chunks: Iterable[bytes] = [state] if isinstance(state, bytes) else state
    host, _, port = address.rpartition(":")
    nc = secrets.token_hex(16)
    size = 0
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=TIMEOUT) as sock:
            _send_json(sock, {"vm": vm, "phase": phase, "nonce": nc})
            hello = _json(sock)
            if "error" in hello:
                raise HandoverError(f"destination refused: {hello['error']}")
            ns = str(hello.get("nonce", ""))
            expected = _mac(key, "dst", vm, phase, nc, ns)
            if not hmac.compare_digest(str(hello.get("proof", "")), expected):
                raise HandoverError("the destination did not prove it holds the key")
            _send_json(sock, {"proof": _mac(key, "src", vm, phase, nc, ns)})
            count = 0
            try:
                for chunk in chunks:
                    mac = _mac(key, "chunk", vm, phase, nc, ns, str(count), _sha(chunk))
                    _send_json(sock, {"size": len(chunk), "mac": mac})
                    sock.sendall(chunk)
                    count += 1
                    size += len(chunk)
                _send_json(
                    sock, {"size": 0, "mac": _mac(key, "end", vm, phase, nc, ns, str(count))}
                )
            except OSError:
                pass  # the destination stopped reading: its answer says why
            answer = _json(sock)
    except OSError as exc:
        raise HandoverError(f"destination agent {address}: {exc}") from None
    if "error" in answer:
        raise HandoverError(f"destination failed: {answer['error']}")
    applied = int(answer.get("applied", -1))
    if not hmac.compare_digest(
        str(answer.get("proof", "")), _mac(key, "ack", vm, phase, nc, ns, str(applied))
    ):
        raise HandoverError("the destination's answer failed its proof")
    return Sent(applied, size)


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    receiver: HandoverReceiver


class _Connection(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(TIMEOUT)
        receiver = self.server.receiver  # type: ignore[attr-defined]
        try:
            receiver.serve(sock)
        except (HandoverError, OSError, ValueError) as exc:
            receiver.failures.append(str(exc))


class HandoverReceiver:
    """The destination side: accepts state only for VMs announced with `expect`."""

    def __init__(self, listen: str, apply: Apply) -> None:
        host, _, port = listen.rpartition(":")
        family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
        _Server.address_family = family
        self.server = _Server((host.strip("[]"), int(port)), _Connection, bind_and_activate=True)
        self.server.receiver = self
        self.apply = apply
        self.keys: dict[str, str] = {}  # vm -> key, for the VMs announced as incoming
        self.lock = threading.Lock()
        self.failures: list[str] = []
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="handover", daemon=True
        )

    @property
    def address(self) -> str:
        host, port = str(self.server.server_address[0]), int(self.server.server_address[1])
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def expect(self, vm: str, key: str) -> None:
        bytes.fromhex(key)  # ValueError for a key that is not hex
        with self.lock:
            self.keys[vm] = key

    def forget(self, vm: str) -> None:
        with self.lock:
            self.keys.pop(vm, None)

    def serve(self, sock: socket.socket) -> None:
        hello = _json(sock)
        vm, phase, nc = str(hello.get("vm")), str(hello.get("phase")), str(hello.get("nonce"))
        with self.lock:
            key = self.keys.get(vm)
        if key is None:
            _refuse(sock, f"no incoming migration of {vm!r} here")
            return
        ns = secrets.token_hex(16)
        _send_json(sock, {"nonce": ns, "proof": _mac(key, "dst", vm, phase, nc, ns)})
        header = _json(sock)
        if not hmac.compare_digest(
            str(header.get("proof", "")), _mac(key, "src", vm, phase, nc, ns)
        ):
            _refuse(sock, "the source did not prove it holds the key")
            return
        applied = count = 0
        while True:
            frame = _json(sock)
            size = int(frame.get("size", -1))
            if size == 0:
                if not hmac.compare_digest(
                    str(frame.get("mac", "")), _mac(key, "end", vm, phase, nc, ns, str(count))
                ):
                    _refuse(sock, "the state's end does not match its proof")
                    return
                break
            if not 0 < size <= MAX_FRAME:
                _refuse(sock, f"bad size {size}")
                return
            chunk = _recv_exact(sock, size)
            mac = _mac(key, "chunk", vm, phase, nc, ns, str(count), _sha(chunk))
            if not hmac.compare_digest(str(frame.get("mac", "")), mac):
                _refuse(sock, "the state does not match its digest")
                return
            try:
                applied += self.apply(vm, phase, chunk)
            except Exception as exc:  # reported to the source, which reports it to its caller
                _refuse(sock, f"applying the state failed: {exc}")
                return
            count += 1
        ack = _mac(key, "ack", vm, phase, nc, ns, str(applied))
        _send_json(sock, {"ok": True, "applied": applied, "proof": ack})


def _refuse(sock: socket.socket, reason: str) -> None:
    """Answer an error mid-stream, then read what the source still sends until it closes:
    closing with unread data would reset the connection, and the answer could be lost."""
    _send_json(sock, {"error": reason})
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(5.0)
    with contextlib.suppress(OSError):
        while sock.recv(1 << 20):
            pass
