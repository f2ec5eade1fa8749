"""A live TCP (and UDP) flow moves from router A to router B: with its conntrack entry
injected into B it keeps flowing; without, strict TCP (tcp_loose=0) breaks it.

Client C (10.77.1.2) and server S (10.77.2.2) are joined by two routers, A and B, each
with `ct state invalid drop` in its forward hook (as our table has). The path is switched
by replacing C's and S's host routes from A to B, as a VM's /32 route moves.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from ipaddress import IPv4Address

import pytest

from hyperwall.dataplane.conntrack.kernel import Conntrack
from hyperwall.dataplane.conntrack.strict import set_tcp_loose, strict_tcp, tcp_loose
from hyperwall.dataplane.conntrack.wire import dumps, loads
from hyperwall.dataplane.netns import inside
from tests.dataplane.conntrack.netns_lab import link, namespaces, nft, sh

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates network namespaces"),
]

C, S = "10.77.1.2", "10.77.2.2"
ROUTER = """table inet hwct {
  chain forward_hw { type filter hook forward priority 0; ct state invalid counter drop;
              iifname "%s" ct state new counter drop; }
}"""


@pytest.fixture
def lab() -> Iterator[dict[str, str]]:
    with namespaces("c", "s", "ra", "rb") as ns:
        link(ns["c"], f"{C}/24", ns["ra"], "10.77.1.1/24")
        link(ns["s"], f"{S}/24", ns["ra"], "10.77.2.1/24")
        cb, bc = link(ns["c"], "10.77.3.2/24", ns["rb"], "10.77.3.1/24")
        sb, bs = link(ns["s"], "10.77.4.2/24", ns["rb"], "10.77.4.1/24")
        sh(ns["rb"], "ip", "route", "add", f"{C}/32", "dev", bc)
        sh(ns["rb"], "ip", "route", "add", f"{S}/32", "dev", bs)
        for r in ("ra", "rb"):
            sh(ns[r], "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        # New connections only from the client side: a packet from the server side that
        # is "new" (server push without state) is dropped, like a VM's ingress policy.
        nft(ns["ra"], ROUTER % "nothing")
        nft(ns["rb"], ROUTER % bs)
        ns["cb"], ns["sb"] = cb, sb
        yield ns


def use_router(ns: dict[str, str], router: str) -> None:
    via_c, via_s = ("10.77.1.1", "10.77.2.1") if router == "ra" else ("10.77.3.1", "10.77.4.1")
    sh(ns["c"], "ip", "route", "replace", f"{S}/32", "via", via_c)
    sh(ns["s"], "ip", "route", "replace", f"{C}/32", "via", via_s)
    sh(ns["c"], "ip", "neigh", "flush", "all")
    sh(ns["s"], "ip", "neigh", "flush", "all")


def echo_server(ns: str, kind: int) -> tuple[socket.socket, threading.Thread]:
    with inside(ns):
        srv = socket.socket(socket.AF_INET, kind)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((S, 7000))
    if kind == socket.SOCK_STREAM:
        srv.listen(1)

    def serve() -> None:
        try:
            if kind == socket.SOCK_STREAM:
                conn, _ = srv.accept()
                with conn:
                    while data := conn.recv(4096):
                        conn.sendall(data)
            else:
                while True:
                    data, peer = srv.recvfrom(4096)
                    srv.sendto(data, peer)
        except OSError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return srv, thread


def echoes(sock: socket.socket, payload: bytes, timeout: float = 1.5) -> bool:
    sock.settimeout(timeout)
    try:
        sock.send(payload)
        return sock.recv(4096) == payload
    except OSError:  # a timeout: the router dropped it
        return False


@pytest.mark.parametrize("handover", [True, False])
def test_tcp_flow_moves_with_its_entry(lab: dict[str, str], handover: bool) -> None:
    use_router(lab, "ra")
    strict_tcp(lab["rb"])
    assert not tcp_loose(lab["rb"])
    srv, _ = echo_server(lab["s"], socket.SOCK_STREAM)
    with inside(lab["c"]):
        cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        cli.bind((C, 0))
        cli.connect((S, 7000))
        assert echoes(cli, b"before the move")
        with Conntrack(lab["ra"]) as ra, Conntrack(lab["rb"]) as rb:
            entries = ra.dump({IPv4(C)})
            assert len(entries) == 1 and entries[0].tcp is not None
            if handover:
                assert rb.inject(loads(dumps(entries))) == 1
            use_router(lab, "rb")
            assert echoes(cli, b"after the move") is handover
            if handover:
                assert echoes(cli, b"and it keeps flowing")
                [moved] = rb.dump({IPv4(C)})
                assert moved.tcp is not None and moved.tcp.state == 3  # ESTABLISHED
            else:
                assert rb.dump({IPv4(C)}) == []  # strict TCP: the stray packet made none
    finally:
        cli.close()
        srv.close()


@pytest.mark.parametrize("handover", [True, False])
def test_udp_server_push_moves_with_its_entry(lab: dict[str, str], handover: bool) -> None:
    """UDP has no strictness: the entry matters where the other side sends first."""
    use_router(lab, "ra")
    with inside(lab["s"]):
        srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with inside(lab["c"]):
        cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        srv.bind((S, 7001))
        srv.settimeout(1.5)
        cli.bind((C, 0))
        cli.settimeout(1.5)
        cli.sendto(b"hello", (S, 7001))
        _, peer = srv.recvfrom(100)
        srv.sendto(b"reply", peer)
        assert cli.recv(100) == b"reply"
        with Conntrack(lab["ra"]) as ra, Conntrack(lab["rb"]) as rb:
            entries = ra.dump({IPv4(C)})
            assert [e.orig.proto for e in entries] == [17]
            if handover:
                rb.inject(entries)
            use_router(lab, "rb")
            srv.sendto(b"push", peer)  # the server sends first on the new path
            try:
                got = cli.recv(100) == b"push"
            except OSError:
                got = False
            assert got is handover
    finally:
        cli.close()
        srv.close()


def test_strict_tcp_does_not_pick_up_a_mid_stream_flow(lab: dict[str, str]) -> None:
    """Loose: a flow whose entry is gone is picked up again mid-stream. Strict: it is
    not (no entry; the packet is invalid and dropped)."""
    use_router(lab, "ra")
    srv, _ = echo_server(lab["s"], socket.SOCK_STREAM)
    with inside(lab["c"]):
        cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        cli.bind((C, 0))
        cli.connect((S, 7000))
        assert echoes(cli, b"one")
        with Conntrack(lab["ra"]) as ra:
            set_tcp_loose(lab["ra"], True)
            ra.flush({IPv4(C)})
            assert echoes(cli, b"loose")
            assert len(ra.dump({IPv4(C)})) == 1
            set_tcp_loose(lab["ra"], False)
            ra.flush({IPv4(C)})
            assert not echoes(cli, b"strict", timeout=1.0)
            assert ra.dump({IPv4(C)}) == []
            counters = sh(lab["ra"], "nft", "list", "chain", "inet", "hwct", "forward_hw")
            assert "packets 0 bytes 0 drop" not in counters.split("ct state invalid")[1][:60]
    finally:
        cli.close()
        srv.close()


def IPv4(text: str) -> IPv4Address:
    return IPv4Address(text)
