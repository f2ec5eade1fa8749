"""`agent.connection_log` on a real kernel: a flood of managed connections (real conntrack
events, marked by an nft rule as our admitting rules mark them) keeps the open table at its
limit and counts what it drops or the kernel overran; afterwards a connection still gives
its record, and the agent's metrics report the losses. In a throwaway namespace
`hwe-<pid>-cl`, the "VMs" being addresses on its loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from hyperwall.agent.connection_log import ConnectionLog
from hyperwall.agent.metrics import AgentMetrics, Sources
from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.program import HostProgram
from hyperwall.compiler.rule_numbers import rule_number
from hyperwall.dataplane.conntrack.kernel import Conntrack
from hyperwall.dataplane.netns import inside
from hyperwall.dataplane.nft import ct_mark
from hyperwall.flows.record import FlowRecord
from hyperwall.io.files import load_catalog

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
]
FLEET = """
apiVersion: hyperwall.io/v1
kind: Tenant
metadata: {name: t}
spec: {defaultAction: allow}
---
apiVersion: hyperwall.io/v1
kind: Workload
metadata: {name: a, tenant: t}
spec:
  host: h
  interfaces: [{name: eth0, mac: "52:54:00:e5:01:01", ips: [10.76.0.1]}]
---
apiVersion: hyperwall.io/v1
kind: Workload
metadata: {name: b, tenant: t}
spec:
  host: h
  interfaces: [{name: eth0, mac: "52:54:00:e5:01:02", ips: [10.76.0.2]}]
"""
MARK = ct_mark.encode(rule_number("default"), "in")  # b's default admitted it
LIMIT = 50
FLOOD = 2000


@pytest.fixture(scope="module")
def ns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = f"hwe-{os.getpid() % 100000}-cl"
    subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for cmd in (
            "ip link set lo up",
            "ip addr add 10.76.0.1/32 dev lo",
            "ip addr add 10.76.0.2/32 dev lo",
            "sysctl -qw net.netfilter.nf_conntrack_udp_timeout=1",
        ):
            subprocess.run(["ip", "netns", "exec", name, *cmd.split()], check=True)
        rules = (
            "add table inet hwe; add chain inet hwe o { type filter hook output priority 0; }; "
            f"add rule inet hwe o ip daddr 10.76.0.2 ct state new ct mark set {MARK:#x}"
        )
        subprocess.run(["ip", "netns", "exec", name, "nft", rules], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> HostProgram:
    folder = tmp_path_factory.mktemp("fleet")
    (folder / "fleet.yaml").write_text(FLEET)
    catalog = load_catalog([folder])
    return FleetCompiler(catalog.config, catalog.workloads.values()).host_program("h")


def _send(ns: str, count: int, port: int) -> int:
    """`count` UDP connections from a to b (one datagram each); the last one's port."""
    with inside(ns):
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    last = 0
    with server:
        server.bind(("10.76.0.2", port))
        for _ in range(count):
            with inside(ns):
                client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with client:
                client.bind(("10.76.0.1", 0))
                client.sendto(b"x" * 10, ("10.76.0.2", port))
                last = client.getsockname()[1]
    return last


def test_a_flood_stays_within_the_limit_and_records_go_on(ns: str, program: HostProgram) -> None:
    written: list[FlowRecord] = []
    log = ConnectionLog("h", lambda: program, written.extend, limit=LIMIT, netns=ns)
    log.start()
    try:
        _send(ns, FLOOD, 7000)
        deadline = time.monotonic() + 60
        seen, still = None, 0  # also done once the counts stand still for 2 s
        while time.monotonic() < deadline and still < 4:
            stats = log.stats()
            if stats.open + stats.dropped >= FLOOD or stats.overruns:
                break
            now = (stats.open, stats.dropped, stats.overruns)
            still, seen = (still + 1 if now == seen else 0), now
            time.sleep(0.5)
        stats = log.stats()
        assert stats.open <= LIMIT
        assert stats.dropped + stats.overruns > 0
        assert stats.open + stats.dropped <= FLOOD
        # and reported: the agent's metrics say what was lost, and why
        families = {f.name: f for f in AgentMetrics(Sources(connections=log)).collect()}
        lost = {
            s.labels["reason"]: s.value
            for s in families["hyperwall_agent_connection_events_lost"].samples
        }
        assert lost["dropped"] >= stats.dropped and lost["overrun"] >= stats.overruns
        assert lost["dropped"] + lost["overrun"] > 0
        # one more connection; it ends 1 s after its datagram (a dump evicts what expired)
        port = _send(ns, 1, 7001)
        found: list[FlowRecord] = []
        deadline = time.monotonic() + 60
        while not found and time.monotonic() < deadline:
            time.sleep(1.0)
            with Conntrack(ns) as ct:
                ct.count()
            found = [r for r in written if r.sport == port and r.dport == 7001]
        assert len(found) == 1
        record = found[0]
        assert (record.rule, record.workload, record.direction) == ("default", "t/b", "in")
        assert (record.src_packets, record.src_bytes, record.dst_packets) == (1, 38, 0)
        assert log.stats().open <= LIMIT
    finally:
        log.stop(timeout=5.0)
