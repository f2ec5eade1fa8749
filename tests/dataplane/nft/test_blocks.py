"""Block lookups decide real connections: a routed host between two VMs, in namespaces.

A hand-made program (no compiler) gives the server one policy chain with a lookup of a
block whose elements land in each kind of set: exact per-protocol hash sets (one address
each side; a source with any destination; an expanded small range) and the interval set
(a port range). TCP connections from the client to listening ports are then allowed or
dropped by the kernel, before and after an incremental change of the block.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest

from hyperwall.compiler.program import BlockSet, Chain, Endpoint, HostProgram, LookupRule
from hyperwall.dataplane.netns import inside
from hyperwall.dataplane.nft.backend import NftBackend
from hyperwall.dataplane.nft.kernel import NftKernel
from hyperwall.dataplane.nft.render import Options
from tests.conftest import PREFIX

V4_MAX = 2**32 - 1
CLIENT, SERVER = "10.9.0.1", "10.9.0.2"
C, S = 0x0A090001, 0x0A090002
GATEWAY = "169.254.1.1"
HOST_MAC = "ee:ee:ee:ee:ee:ee"
PORTS = (5201, 5202, 5300, 6000, 6001, 6002)

pytestmark = pytest.mark.kernel  # builds its own namespaces


def run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@dataclasses.dataclass
class Topology:
    host: str
    client: str
    server: str
    ifnames: dict[str, str]  # endpoint key -> host-side interface


@pytest.fixture
def topology() -> Iterator[Topology]:
    tag = f"{PREFIX}{os.getpid() % 100000}"
    t = Topology(f"{tag}-h", f"{tag}-c", f"{tag}-s", {"c": f"{tag}c", "s": f"{tag}s"})
    made: list[str] = []
    try:
        for ns in (t.host, t.client, t.server):
            run("ip", "netns", "add", ns)
            made.append(ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "netns", "exec", t.host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for key, ns, ip, mac in (
            ("c", t.client, CLIENT, "52:54:00:00:09:01"),
            ("s", t.server, SERVER, "52:54:00:00:09:02"),
        ):
            outside = t.ifnames[key]
            run("ip", "-n", t.host, "link", "add", outside, "type", "veth", "peer", "eth0",
                "netns", ns)  # fmt: skip
            run("ip", "-n", t.host, "link", "set", outside, "address", HOST_MAC, "up")
            run("ip", "-n", ns, "link", "set", "eth0", "address", mac, "up")
            run("ip", "-n", ns, "addr", "add", f"{ip}/32", "dev", "eth0")
            run("ip", "-n", ns, "route", "add", GATEWAY, "dev", "eth0")
            run("ip", "-n", ns, "route", "add", "default", "via", GATEWAY, "dev", "eth0")
            run("ip", "-n", ns, "neigh", "replace", GATEWAY, "lladdr", HOST_MAC, "dev", "eth0")
            run("ip", "-n", t.host, "route", "add", f"{ip}/32", "dev", outside)
            run("ip", "-n", t.host, "neigh", "replace", ip, "lladdr", mac, "dev", outside)
        yield t
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False)


def program(block: frozenset[tuple[int, int, int, int, int, int, int, int, str]]) -> HostProgram:
    chain = Chain("p:server-in", (LookupRule("b:server-in", "allow", ("t/p/r",)),))
    client = Endpoint("t/c/eth0", "t/c", "eth0", "t", "52:54:00:00:09:01", (CLIENT,), (), (),
                      "allow", False)  # fmt: skip
    server = Endpoint("t/s/eth0", "t/s", "eth0", "t", "52:54:00:00:09:02", (SERVER,),
                      ((chain.name,),), (), "drop", False)  # fmt: skip
    return HostProgram(
        "h",
        {},
        {"b:server-in": BlockSet("b:server-in", block)},
        {chain.name: chain},
        {client.key: client, server.key: server},
    )


@contextlib.contextmanager
def listening(ns: str) -> Iterator[None]:
    with inside(ns):
        servers = [socket.create_server((SERVER, port)) for port in PORTS]
    stop = threading.Event()

    def serve(sock: socket.socket) -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                sock.accept()[0].close()

    threads = [threading.Thread(target=serve, args=(s,), daemon=True) for s in servers]
    for th in threads:
        th.start()
    try:
        yield
    finally:
        stop.set()
        for th in threads:
            th.join()
        for s in servers:
            s.close()


def reachable(ns: str) -> set[int]:
    """The server ports a TCP connection from the client gets through to."""
    with inside(ns):
        socks = {port: socket.socket() for port in PORTS}
    out = set()
    for port, sock in socks.items():
        with sock:
            sock.settimeout(1.0)
            try:
                sock.connect((SERVER, port))
                out.add(port)
            except OSError:
                pass
    return out


def test_block_lookups_decide_connections(topology: Topology) -> None:
    t = topology
    with inside(t.host):
        nft = NftKernel()
    by_key = {"t/c/eth0": t.ifnames["c"], "t/s/eth0": t.ifnames["s"]}
    options = Options(vm_prefix=PREFIX, ifname_of=lambda ep: by_key[ep.key])
    backend = NftBackend(nft, options)
    block = frozenset(
        {
            (4, C, C, S, S, 6, 5201, 5201, "t/p/r"),  # exact: one address each side
            (4, C, C, 0, V4_MAX, 6, 5300, 5300, "t/p/r"),  # exact: any destination
            (4, C - 1, C + 1, S, S + 1, 6, 6002, 6002, "t/p/r"),  # exact: expanded ranges
            (4, C, C, S, S, 6, 6000, 6001, "t/p/r"),  # interval: a port range
            (4, C, C, S, S, 17, 5202, 5202, "t/p/r"),  # UDP only: TCP 5202 stays closed
        }
    )
    with listening(t.server):
        assert backend.apply(program(block)).mode == "sync"
        assert reachable(t.client) == {5201, 5300, 6000, 6001, 6002}
        changed = (block - {(4, C, C, S, S, 6, 5201, 5201, "t/p/r")}) | {
            (4, C, C, S, S, 6, 5202, 5202, "t/p/r")
        }
        assert backend.apply(program(changed)).mode == "incremental"
        assert reachable(t.client) == {5202, 5300, 6000, 6001, 6002}
