"""Anti-spoofing in the lab: a VM may send only from its own MAC and its own addresses.

The tenant's default is `allow` and no policy denies anything, so anti-spoofing is the only
thing that can stop these packets. For each case the VM sends with a foreign source address
(added to its interface, probe bound to it) or a foreign source MAC (`ip link set eth0
address`), and the test asserts, besides the probe's own `blocked`:

- at the destination nothing arrived: a named nft counter in the destination VM's own
  namespace (table `hwltest_spoof`, prerouting, before conntrack and the responder's NAT)
  matching the spoofed source and the probe's service stays at 0;
- the source host's `spoofed` chain counted the packets (`inet hyperwall spoofed`);
- the same probe from the VM's real address and MAC is `allowed`, and the destination's
  counter for the real source saw it (so the counters do count what arrives).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hyperwall.lab import Lab
from hyperwall.lab.topology import GATEWAY4, GATEWAY6, SHARED_MAC

from .conftest import lab_marks, lab_name, lab_namespaces

pytestmark = lab_marks()

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
  host: hv1
  interfaces: [{name: eth0, mac: "52:54:00:5a:00:01", ips: [10.7.0.1, "fd00:7::1"]}]
---
apiVersion: hyperwall.io/v1
kind: Workload
metadata: {name: b, tenant: t}
spec:
  host: hv1
  interfaces: [{name: eth0, mac: "52:54:00:5a:00:02", ips: [10.7.0.2, "fd00:7::2"]}]
---
apiVersion: hyperwall.io/v1
kind: Workload
metadata: {name: c, tenant: t}
spec:
  host: hv2
  interfaces: [{name: eth0, mac: "52:54:00:5a:00:03", ips: [10.7.0.3, "fd00:7::3"]}]
"""
REAL = {
    "a": ("52:54:00:5a:00:01", "10.7.0.1", "fd00:7::1"),
    "b": ("52:54:00:5a:00:02", "10.7.0.2", "fd00:7::2"),
    "c": ("52:54:00:5a:00:03", "10.7.0.3", "fd00:7::3"),
}
HOSTS = {"a": "hv1", "b": "hv1", "c": "hv2"}
TABLE = "hwltest_spoof"


@dataclass(frozen=True)
class Case:
    id: str
    src: str  # the sending VM
    dst: str  # the receiving VM
    family: int
    service: str
    address: str | None = None  # a foreign source address (None: the real one)
    mac: str | None = None  # a foreign source MAC (None: the real one)

    @property
    def real_address(self) -> str:
        return REAL[self.src][1 if self.family == 4 else 2]

    @property
    def dst_address(self) -> str:
        return REAL[self.dst][1 if self.family == 4 else 2]

    @property
    def source(self) -> str:
        """The source address of the spoofed packets."""
        return self.address or self.real_address


CASES = [
    Case("v4-nobodys-address-same-host", "a", "b", 4, "tcp/5001", address="10.7.0.99"),
    Case("v4-other-vms-address-cross-host", "a", "c", 4, "udp/5002", address="10.7.0.2"),
    Case("v4-icmp-nobodys-address", "a", "c", 4, "icmp/echo-request", address="10.7.0.98"),
    Case("v6-nobodys-address-cross-host", "a", "c", 6, "tcp/5003", address="fd00:7::99"),
    Case("v6-other-vms-address-same-host", "a", "b", 6, "udp/5004", address="fd00:7::3"),
    Case("v6-icmpv6-nobodys-address", "c", "a", 6, "icmpv6/echo-request", address="fd00:7::98"),
    Case("mac-foreign-v4", "a", "b", 4, "tcp/5005", mac="52:54:00:5a:00:99"),
    Case("mac-of-other-vm-v6", "a", "c", 6, "udp/5006", mac="52:54:00:5a:00:02"),
    Case("mac-foreign-cross-host-icmp", "c", "b", 4, "icmp/echo-request", mac="52:54:00:5a:0c:0c"),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    path: Path = tmp_path_factory.mktemp("spoof") / "fleet.yaml"
    path.write_text(FLEET)
    lab = Lab(lab_name("a"))
    lab.down()  # left-overs of an earlier run with the same pid
    try:
        lab.up([path])
        yield lab
    finally:
        lab.down()
        assert lab_namespaces(lab) == []


def _match(case: Case, source: str) -> str:
    """An nft match for packets of this case's probe from `source` to its destination."""
    ip = "ip" if case.family == 4 else "ip6"
    proto, _, port = case.service.partition("/")
    if proto.startswith("icmp"):
        l4 = f"{proto} type echo-request"
    else:
        l4 = f"meta l4proto {proto} th dport {port}"
    return f"{ip} saddr {source} {ip} daddr {case.dst_address} {l4}"


def install_counters(lab: Lab, case: Case) -> None:
    """Named counters `spoofed` and `real` in the destination VM's own namespace."""
    ruleset = (
        f"table inet {TABLE} {{\n"
        "  counter spoofed {}\n"
        "  counter real {}\n"
        "  chain pre {\n"
        "    type filter hook prerouting priority raw; policy accept;\n"
        f"    {_match(case, case.source)} counter name spoofed\n"
        f"    {_match(case, case.real_address)} counter name real\n"
        "  }\n"
        "}\n"
    )
    lab.exec(case.dst, ["nft", "-f", "-"], check=True, stdin=ruleset)


def counter(lab: Lab, vm: str, name: str) -> int:
    done = lab.exec(vm, ["nft", "-j", "list", "counter", "inet", TABLE, name], check=True)
    found = [o["counter"] for o in json.loads(done.stdout)["nftables"] if "counter" in o]
    return int(found[0]["packets"])


def spoofed_chain_packets(lab: Lab, host: str) -> int:
    """Packets counted in the host's `spoofed` chain (anti-spoofing drops)."""
    argv = ["nft", "-j", "list", "chain", "inet", "hyperwall", "spoofed"]
    done = subprocess.run(
        ["ip", "netns", "exec", lab.names.host_ns(host), *argv],
        capture_output=True,
        text=True,
        check=True,
    )
    total = 0
    for obj in json.loads(done.stdout)["nftables"]:
        for expr in obj.get("rule", {}).get("expr", []):
            if isinstance(expr, dict) and "counter" in expr:
                total += int(expr["counter"]["packets"])
    return total


def set_mac(lab: Lab, vm: str, mac: str) -> None:
    """Change the MAC of `vm`'s eth0 and put back its gateway neighbour entries.

    The kernel flushes a link's neighbour entries, permanent ones included, when its
    address changes (NETDEV_CHANGEADDR), and the lab's hosts do not answer ARP/ND for the
    gateway (the lab relies on the permanent entries), so without this the VM would send
    nothing but ARP requests.
    """
    script = (
        f"ip link set eth0 address {mac}"
        f" && ip neigh replace {GATEWAY4} lladdr {SHARED_MAC} dev eth0 nud permanent"
        f" && ip neigh replace {GATEWAY6} lladdr {SHARED_MAC} dev eth0 nud permanent"
    )
    lab.exec(vm, ["sh", "-ec", script], check=True)


def spoof(lab: Lab, case: Case) -> None:
    if case.address is not None:
        prefix = 32 if case.family == 4 else 128
        argv = ["ip", "address", "add", f"{case.address}/{prefix}", "dev", "eth0"]
        lab.exec(case.src, [*argv, "nodad"] if case.family == 6 else argv, check=True)
    if case.mac is not None:
        set_mac(lab, case.src, case.mac)


def unspoof(lab: Lab, case: Case) -> None:
    if case.address is not None:
        prefix = 32 if case.family == 4 else 128
        lab.exec(case.src, ["ip", "address", "del", f"{case.address}/{prefix}", "dev", "eth0"])
    if case.mac is not None:
        set_mac(lab, case.src, REAL[case.src][0])


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_spoofed_traffic_gets_nothing_through(lab: Lab, case: Case) -> None:
    install_counters(lab, case)
    try:
        before = spoofed_chain_packets(lab, HOSTS[case.src])
        spoof(lab, case)
        try:
            spoofed = lab.probe_report(
                case.real_address, case.dst_address, case.service, source=case.source
            )
        finally:
            unspoof(lab, case)
        arrived = counter(lab, case.dst, "spoofed")
        after = spoofed_chain_packets(lab, HOSTS[case.src])
        real = lab.probe_report(case.real_address, case.dst_address, case.service)
        real_arrived = counter(lab, case.dst, "real")
    finally:
        lab.exec(case.dst, ["nft", "delete", "table", "inet", TABLE])
    assert (spoofed.result, arrived) == ("blocked", 0), spoofed.outcome.detail
    assert after > before, "the host's `spoofed` chain did not count the spoofed packets"
    assert real.result == "allowed", real.outcome.detail
    assert real_arrived >= 1, "the destination's counter did not see the real probe"


SEND_UDP = """
import socket, sys
src, sport, dst, dport, count, wait = sys.argv[1:7]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, int(sport)))
s.settimeout(float(wait))
for _ in range(int(count)):
    s.sendto(b"hello", (dst, int(dport)))
if float(wait) > 0:
    s.recvfrom(100)  # the responder's answer: the flow is established both ways
"""


def test_no_injection_into_another_vms_connection(lab: Lab) -> None:
    """a (hv1) has an established UDP flow with c (hv2). b, on a's host, sends packets with
    a's address and port on that flow, which the host's conntrack knows as established:
    they must not reach c (the source check runs on every packet, not just on the first
    of a connection), and hv1's `spoofed` chain counts them."""
    a_ip, b_vm, c_ip = REAL["a"][1], "b", REAL["c"][1]
    flow = f"ip saddr {a_ip} ip daddr {c_ip} udp sport 40007 udp dport 5007"
    ruleset = (
        f"table inet {TABLE} {{\n  counter injected {{}}\n  chain pre {{\n"
        "    type filter hook prerouting priority raw; policy accept;\n"
        f"    {flow} counter name injected\n  }}\n}}\n"
    )
    lab.exec("c", ["nft", "-f", "-"], check=True, stdin=ruleset)
    try:
        lab.exec(
            "a", ["python3", "-c", SEND_UDP, a_ip, "40007", c_ip, "5007", "1", "3"], check=True
        )
        established = counter(lab, "c", "injected")
        before = spoofed_chain_packets(lab, "hv1")
        lab.exec(b_vm, ["ip", "address", "add", f"{a_ip}/32", "dev", "eth0"], check=True)
        try:
            lab.exec(
                b_vm, ["python3", "-c", SEND_UDP, a_ip, "40007", c_ip, "5007", "5", "0"], check=True
            )
        finally:
            lab.exec(b_vm, ["ip", "address", "del", f"{a_ip}/32", "dev", "eth0"])
        injected = counter(lab, "c", "injected") - established
        after = spoofed_chain_packets(lab, "hv1")
    finally:
        lab.exec("c", ["nft", "delete", "table", "inet", TABLE])
    assert established == 1, "a's own packet did not arrive: the flow was never established"
    assert injected == 0
    assert after - before >= 5
