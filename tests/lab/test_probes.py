"""Probe classification (`lab.probes`) and the responder's control protocol, on loopback."""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from hyperwall.lab.probe_messages import ProbeOutcome, ProbeRequest
from hyperwall.lab.probes import _match4, _match6, run_probe
from hyperwall.lab.responder import answer


@pytest.fixture
def echo_server() -> Iterator[int]:
    """A TCP echo server on 127.0.0.1; its port."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(conn.recv(16))

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def _closed_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tcp_allowed_and_refused(echo_server: int) -> None:
    ok = run_probe(ProbeRequest("tcp", "127.0.0.1", "127.0.0.1", echo_server, 2.0))
    assert ok.result == "allowed"
    closed = _closed_port(socket.SOCK_STREAM)
    refused = run_probe(ProbeRequest("tcp", "127.0.0.1", "127.0.0.1", closed, 2.0))
    assert refused == ProbeOutcome("rejected", "connection refused")


def test_udp_port_unreachable_is_rejected() -> None:
    closed = _closed_port(socket.SOCK_DGRAM)
    outcome = run_probe(ProbeRequest("udp", "127.0.0.1", "127.0.0.1", closed, 2.0))
    assert outcome.result == "rejected"


def test_bad_source_is_an_error() -> None:
    outcome = run_probe(ProbeRequest("tcp", "192.0.2.1", "127.0.0.1", 9, 0.5))
    assert outcome.result == "error"


@pytest.mark.kernel
@pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP sockets need root")
def test_icmp_echo_on_loopback() -> None:
    assert run_probe(ProbeRequest("icmp", "127.0.0.1", "127.0.0.1", 8, 2.0)).result == "allowed"


def _ipv4(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    return (
        struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0)
        + socket.inet_aton(src)
        + socket.inet_aton(dst)
        + payload
    )


def test_icmp4_classification() -> None:
    echo = struct.pack("!BBHHH", 8, 0, 0, 77, 1)
    reply = _ipv4("10.0.0.2", "10.0.0.1", 1, struct.pack("!BBHHH", 0, 0, 0, 77, 1))
    assert _match4(reply, 77, "10.0.0.2") == ProbeOutcome("allowed", "echo reply")
    assert _match4(reply, 78, "10.0.0.2") is None
    assert _match4(reply, 77, "10.0.0.3") is None
    inner = _ipv4("10.0.0.1", "10.0.0.2", 1, echo)
    error = _ipv4("169.254.100.1", "10.0.0.1", 1, struct.pack("!BBHI", 3, 13, 0, 0) + inner)
    outcome = _match4(error, 77, "10.0.0.2")
    assert outcome is not None and outcome.result == "rejected" and "code 13" in outcome.detail
    assert _match4(error, 78, "10.0.0.2") is None


def test_icmp6_classification() -> None:
    assert _match6(struct.pack("!BBHHH", 129, 0, 0, 5, 1), "fd00::2", 5, "fd00::2") is not None
    assert _match6(struct.pack("!BBHHH", 129, 0, 0, 5, 1), "fd00::3", 5, "fd00::2") is None
    header = struct.pack("!IHBB", 0x60000000, 8, 58, 64)
    header += socket.inet_pton(socket.AF_INET6, "fd00::1")
    header += socket.inet_pton(socket.AF_INET6, "fd00::2")
    inner = header + struct.pack("!BBHHH", 128, 0, 0, 5, 1)
    error = struct.pack("!BBHI", 1, 1, 0, 0) + inner
    outcome = _match6(error, "fe80::1", 5, "fd00::2")
    assert outcome is not None and outcome.result == "rejected"
    assert _match6(error, "fe80::1", 6, "fd00::2") is None


def test_control_messages() -> None:
    assert answer({"op": "ping"}) == {"ok": True, "pid": os.getpid()}
    assert answer({"op": "probe", "proto": "gre"})["result"] == "error"
    assert answer({"op": "nope"})["ok"] is False
    request = ProbeRequest("udp", "10.0.0.1", "10.0.0.2", 53, 1.0)
    assert ProbeRequest.from_json(request.to_json()) == request
    assert ProbeOutcome.from_json({"result": "weird"}).result == "error"
