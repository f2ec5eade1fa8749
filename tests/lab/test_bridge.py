"""Bridge mode (`lab up --mode bridge`): VMs bridged on their host, one VXLAN segment for all.

The plan and its rendering are checked without root. With root, one lab for the module (built
through the CLI, taken down in a finally): agents run `--mode bridge`; real traffic between
the VMs (same host and across hosts, TCP/UDP/ICMP, IPv4 and IPv6) and from/to outside IPv4
addresses gives the verdicts of `trace`, `reject` included; a VM sending from a foreign address
gets nothing through; `lab down` leaves nothing. Outside IPv6 addresses are not reachable in
bridge mode (docs/design/lab.md) and are not probed.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from hyperwall.analysis.trace import trace
from hyperwall.io.files import load_catalog
from hyperwall.lab import Lab, agents, iproute, nsexec
from hyperwall.lab.state import LabPaths
from hyperwall.lab.topology import (
    HOST_BRIDGE,
    UNDERLAY_MTU_BRIDGED,
    UPLINK,
    VXLAN,
    VXLAN_ID,
    VXLAN_PORT,
    LabPlan,
    TopologyError,
    build_plan,
    tap_mac,
)
from hyperwall.policy.model import Catalog, Interface

from .conftest import EXAMPLES, VERDICT_TO_RESULT, lab_marks, lab_name, lab_namespaces, run_cli

Test = TypeVar("Test", bound=Callable[..., None])


def builds_the_lab(test: Test) -> Test:
    """Root only; marked `lab`, `kernel` and `slow`."""
    for mark in lab_marks():
        test = mark(test)
    return test


PARALLEL = 64

# web-2 rejects, in the emergency tier; jump-1 (hv1) and app-2 (hv2, web-2's host) may send
REFUSE_WEB2 = """
apiVersion: hyperwall.io/v1
kind: Policy
metadata:
  name: lab-bridge-refuse
spec:
  tier: emergency
  priority: 1
  appliedTo: {selector: 'hyperwall.io/name == "web-2"'}
  rules:
    - name: refuse
      action: reject
      direction: in
      services: [icmp/echo-request, icmpv6/echo-request, udp/5353, tcp/9100]
---
apiVersion: hyperwall.io/v1
kind: Policy
metadata:
  name: lab-bridge-let-out
spec:
  tier: emergency
  priority: 2
  appliedTo: {selector: 'hyperwall.io/name in {"app-2", "jump-1"}'}
  rules:
    - name: to-web-2
      action: allow
      direction: out
      to: [{selector: 'hyperwall.io/name == "web-2"'}]
      services: [icmp/echo-request, icmpv6/echo-request, udp/5353, tcp/9100]
"""


# -- the plan (no root) ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog([EXAMPLES])


@pytest.fixture(scope="module")
def plan(catalog: Catalog) -> LabPlan:
    return build_plan("t1", catalog, "bridge")


def test_hosts_bridge_their_vms_and_the_vxlan_segment(plan: LabPlan) -> None:
    assert plan.mode == "bridge"
    hv1 = plan.host("hv1")
    (bridge,) = [b for b in plan.bridges if b.ns == hv1.ns]
    vms = [v for v in plan.vms if v.host == "hv1"]
    ports = {i.host_ifname for v in vms for i in v.interfaces}
    assert bridge.name == HOST_BRIDGE and set(bridge.ports) == ports | {VXLAN}
    web = plan.vm("acme/web-1")
    veth = next(v for v in plan.veths if v.peer_ns == web.ns)
    assert (veth.ns, veth.name, veth.mac) == (hv1.ns, "hwt525400010021", "fe:54:00:01:00:21")
    assert veth.mac == tap_mac(web.interfaces[0].mac)
    members = [*plan.hosts, plan.external]
    assert {(x.ns, x.name, x.vni, x.port, x.local, x.dev) for x in plan.vxlans} == {
        (m.ns, VXLAN, VXLAN_ID, VXLAN_PORT, m.ipv4, UPLINK) for m in members
    }
    for m in members:
        others = {o.ipv4 for o in members if o is not m}
        assert {f.dst for f in plan.flood if f.ns == m.ns} == others
    uplinks = [v for v in plan.veths if v.name == UPLINK]
    assert {v.mtu for v in uplinks} == {UNDERLAY_MTU_BRIDGED}


def test_host_routes_every_vm_address_of_the_fleet_via_its_bridge(plan: LabPlan) -> None:
    everything = {f"{ip}/{128 if ':' in ip else 32}" for v in plan.vms for ip in v.addresses}
    for h in plan.hosts:
        routes = {r.dst for r in plan.routes if r.ns == h.ns and r.dev == HOST_BRIDGE}
        assert routes == everything
        addresses = {a.cidr for a in plan.addresses if a.ns == h.ns and a.dev == HOST_BRIDGE}
        assert addresses == {f"169.254.1.{h.index}/32", f"fe80::1:{h.index}/64"}
        values = {s.key: s.value for s in plan.sysctls if s.ns == h.ns}
        assert values["net/bridge/bridge-nf-call-iptables"] == "1"
        assert values["net/bridge/bridge-nf-call-ip6tables"] == "1"
    external = {r.dst for r in plan.routes if r.ns == plan.external.ns and r.dev == VXLAN}
    assert external == everything


def test_vms_resolve_every_destination_on_link(plan: LabPlan) -> None:
    web = plan.vm("acme/web-1")
    routes = {(r.dst, r.dev, r.via, r.table) for r in plan.routes if r.ns == web.ns}
    assert routes == {("0.0.0.0/0", "eth0", None, None), ("::/0", "eth0", None, None)}
    assert [n for n in plan.neighbours if n.ns in {v.ns for v in plan.vms}] == []
    assert not any(n.dev == HOST_BRIDGE or n.dev.startswith("hwt") for n in plan.neighbours)
    db = plan.vm("acme/db-1")
    rules = {(r.src, r.table) for r in plan.rules if r.ns == db.ns}
    assert rules == {("10.1.0.42/32", 101), ("fd00:1::42/128", 101)}
    table = {(r.dst, r.dev, r.via) for r in plan.routes if r.ns == db.ns and r.table == 101}
    assert table == {("0.0.0.0/0", "eth1", None), ("::/0", "eth1", None)}
    values = {s.key: s.value for s in plan.sysctls if s.ns == db.ns}
    assert values["net/ipv4/conf/all/arp_ignore"] == "1"


def test_rendered_bridge_batches(plan: LabPlan) -> None:
    hv1 = plan.host("hv1").ns
    lines = iproute.namespace_lines(plan, hv1)
    add_bridge = "link add hwbr0 address 02:00:a9:fe:67:01 type bridge stp_state 0 mcast_snooping 0"
    add_vxlan = (
        "link add hwvx0 address 02:00:a9:fe:66:01 mtu 1500 type vxlan id 42"
        " local 169.254.100.1 dev uplink dstport 4789"
    )
    assert lines.index(add_bridge) < lines.index("link set hwt525400010021 master hwbr0")
    assert lines.index(add_vxlan) < lines.index("link set hwvx0 master hwbr0")
    assert lines.index("link set hwvx0 up") < lines.index("address add 169.254.1.1/32 dev hwbr0")
    assert "address add fe80::1:1/64 dev hwbr0 nodad" in lines
    assert "route add 10.1.0.22/32 dev hwbr0" in lines
    assert not any(line.startswith("neigh") and "hwbr0" in line for line in lines)
    assert iproute.flood_lines(plan, hv1) == [
        "fdb append 00:00:00:00:00:00 dev hwvx0 dst 169.254.100.2",
        "fdb append 00:00:00:00:00:00 dev hwvx0 dst 169.254.100.254",
    ]
    assert "mtu 1550 type veth" in iproute.veth_lines(plan)[0]
    vm = iproute.namespace_lines(plan, plan.vm("acme/web-1").ns)
    assert "route add 0.0.0.0/0 dev eth0" in vm and "route add ::/0 dev eth0" in vm
    external = iproute.namespace_ruleset(plan, plan.external.ns)
    assert 'iifname "uplink" udp dport 4789 accept' in external
    assert "4789" not in iproute.namespace_ruleset(plan, plan.vm("acme/web-1").ns)
    sysctl_links = {s.key.split("/")[3] for s in plan.sysctls if s.ns == hv1 and "/conf/" in s.key}
    assert HOST_BRIDGE not in sysctl_links and VXLAN not in sysctl_links  # made later


def test_routed_plan_is_unchanged_by_the_mode_argument(catalog: Catalog) -> None:
    routed = build_plan("t1", catalog)
    assert routed == build_plan("t1", catalog, "routed")
    assert routed.mode == "routed" and routed.vxlans == () and routed.flood == ()
    bridged = build_plan("t1", catalog, "bridge")
    assert bridged.topology_key() == routed.topology_key()  # `lab apply` compares these


def test_bridge_mode_refuses_bad_input(catalog: Catalog) -> None:
    with pytest.raises(TopologyError, match="mode"):
        build_plan("t1", catalog, "tunnel")  # type: ignore[arg-type]
    w = catalog.workloads["acme/web-1"]
    for mac in ("fe:54:00:01:00:21", "02:00:a9:fe:67:01"):
        bad = dataclasses.replace(w, interfaces=(Interface("eth0", mac, ("10.1.0.21",)),))
        broken = dataclasses.replace(catalog, workloads={**catalog.workloads, w.key: bad})
        with pytest.raises(TopologyError, match="bridge mode"):
            build_plan("t1", broken, "bridge")


def test_agent_command_line_carries_the_mode(tmp_path: Path) -> None:
    paths = LabPaths(tmp_path, "t1")
    argv = agents.agent_argv(paths, "hv1", "bridge")
    assert argv[argv.index("--mode") + 1] == "bridge"
    assert "--mode" not in agents.agent_argv(paths, "hv1")


# -- the real lab (root) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    lab = Lab(lab_name("b"))
    lab.down()  # left-overs of an earlier run with the same pid
    try:
        done = run_cli("lab", "up", "-f", str(EXAMPLES), "--name", lab.name, "--mode", "bridge")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "bridge mode" in done.stdout
        yield lab
    finally:
        lab.down()
        assert lab_namespaces(lab) == []


def _in_ns(ns: str, *argv: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, check=True
    ).stdout


@builds_the_lab
def test_hosts_are_bridged_and_agents_run_bridge_mode(lab: Lab) -> None:
    plan = lab.plan()
    assert plan.mode == "bridge"
    state = lab.state()
    assert set(state.agents) == {"hv1", "hv2"}
    for host in plan.hosts:
        pid = state.agents[host.name].pid
        assert pid is not None and "--mode bridge" in nsexec.cmdline(pid)
        tables = _in_ns(host.ns, "nft", "list", "tables").split()
        assert "bridge" in tables and "inet" in tables  # `bridge hyperwall`, `inet hyperwall`
        assert _in_ns(host.ns, "cat", "/proc/sys/net/bridge/bridge-nf-call-iptables").strip() == "1"
        links = json.loads(_in_ns(host.ns, "ip", "-j", "link", "show", "master", HOST_BRIDGE))
        ports = {link["ifname"] for link in links}
        bridge = next(b for b in plan.bridges if b.ns == host.ns)
        assert ports == set(bridge.ports)
    assert lab.status().healthy


@builds_the_lab
def test_probes_tsv(lab: Lab) -> None:
    rows = []
    for line in (EXAMPLES / "probes.tsv").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            src, dst, service, verdict = line.split("\t")[:4]
            rows.append((src, dst, service, VERDICT_TO_RESULT[verdict]))
    assert not any(":" in r[0] and lab.plan().owner(r[0]) is None for r in rows)  # no outside v6
    results = lab.probe_many([row[:3] for row in rows])
    assert list(zip(rows, results, strict=True)) == [(row, row[3]) for row in rows]


def _vm_matrix(catalog: Catalog) -> list[tuple[str, str, str]]:
    """Every ordered VM pair over TCP, UDP and ICMP echo, IPv4 and IPv6; db-1's eth1 both ways."""
    workloads = sorted(catalog.workloads.values(), key=lambda w: w.key)
    v6 = {w.key: next(ip for ip in w.ips() if ":" in ip) for w in workloads}
    probes = []
    for a, b in itertools.permutations(workloads, 2):
        probes += [(a.key, b.key, s) for s in ("tcp/5432", "udp/53", "icmp/echo-request")]
        probes += [(v6[a.key], v6[b.key], s) for s in ("tcp/22", "udp/53", "icmpv6/echo-request")]
    for w in workloads:
        if w.key != "acme/db-1":
            probes += [(w.key, "10.1.0.42", "tcp/5432"), ("10.1.0.42", w.key, "tcp/22")]
            probes += [(v6[w.key], "fd00:1::42", "icmpv6/echo-request")]
    return probes


def _mismatches(lab: Lab, probes: list[tuple[str, str, str]]) -> list[object]:
    catalog = lab.catalog()
    reports = lab.probe_reports(probes, parallel=PARALLEL)
    expected = [VERDICT_TO_RESULT[trace(catalog, *p).verdict] for p in probes]
    return [
        (p, want, r.result, r.outcome.detail)
        for p, want, r in zip(probes, expected, reports, strict=True)
        if r.result != want
    ]


@builds_the_lab
def test_vm_to_vm_traffic_matches_trace(lab: Lab) -> None:
    catalog = lab.catalog()
    probes = _vm_matrix(catalog)
    hosts = {w.key: w.host for w in catalog.workloads.values()}
    same = [p for p in probes if p[0] in hosts and hosts[p[0]] == hosts.get(p[1])]
    assert same and len(same) < len(probes)  # both same-host and cross-host pairs
    assert _mismatches(lab, probes) == []
    verdicts = {trace(catalog, *p).verdict for p in probes}
    assert verdicts == {"allow", "drop", "reject"}


@builds_the_lab
def test_outside_ipv4_traffic_matches_trace(lab: Lab) -> None:
    probes = []
    for w in sorted(lab.catalog().workloads):
        probes += [("198.51.100.7", w, "tcp/443"), (w, "192.0.2.10", "tcp/873")]
        probes += [("203.0.113.9", w, "icmp/echo-request"), (w, "192.0.2.53", "udp/53")]
    assert _mismatches(lab, probes) == []


@builds_the_lab
def test_reject_answers_bridged_packets(lab: Lab, tmp_path: Path) -> None:
    """TCP reset and ICMP(v6) admin-prohibited reach the sender: same host, across hosts, and
    from the outside (the host routes to the VM addresses via its bridge, docs/design/lab.md)."""
    docs = tmp_path / "docs"
    shutil.copytree(EXAMPLES, docs)
    (docs / "lab-bridge-test.yaml").write_text(REFUSE_WEB2)
    probes = []
    for src, v6 in (("jump-1", "fd00:1::5"), ("app-2", "fd00:1::32")):  # across hosts, same host
        probes += [(src, "web-2", s) for s in ("ping", "udp/5353", "tcp/9100")]
        probes += [(v6, "fd00:1::22", s) for s in ("icmpv6/echo-request", "udp/5353", "tcp/9100")]
    probes += [("198.51.100.7", "web-2", "udp/5353"), ("198.51.100.7", "web-2", "tcp/9100")]
    control = [("jump-1", "web-2", "ssh")]
    before = lab.probe_many([*probes, *control])
    assert "rejected" not in before and before[-1] == "allowed"
    try:
        lab.apply([docs], wait=True)
        after = lab.probe_many([*probes, *control])
        assert after == ["rejected"] * len(probes) + ["allowed"]
        catalog = lab.catalog()
        assert after == [VERDICT_TO_RESULT[trace(catalog, *p).verdict] for p in [*probes, *control]]
    finally:
        lab.apply([EXAMPLES], wait=True)
    assert lab.probe_many([*probes, *control]) == before


@builds_the_lab
def test_foreign_source_address_gets_nothing_through(lab: Lab) -> None:
    """Anti-spoofing at the bridge port: nobody's address, then another VM's (lb-1's)."""
    v4 = [("web-1", "app-1", "app-api"), ("web-1", "app-2", "app-api"), ("web-1", "dns-1", "dns")]
    v6 = [("fd00:1::21", "fd00:1::31", "app-api"), ("fd00:1::21", "fd00:1::32", "app-api")]
    families = [(v4, ("10.1.0.99", "10.1.0.10"), 32), (v6, ("fd00:1::99", "fd00:1::10"), 128)]
    for probes, foreigners, length in families:
        assert lab.probe_many(probes) == ["allowed"] * len(probes)  # same host, across hosts
        for foreign in foreigners:
            address = ["address", "add", f"{foreign}/{length}", "dev", "eth0", "nodad"]
            lab.exec("web-1", ["ip", *address], check=True)
            try:
                reports = lab.probe_reports(probes, source=foreign)
                assert [r.result for r in reports] == ["blocked"] * len(probes)
            finally:
                address[1] = "del"
                lab.exec("web-1", ["ip", *address[:5]], check=True)
        assert lab.probe_many(probes) == ["allowed"] * len(probes)


@builds_the_lab
def test_dhcp_ports_do_not_bypass_policy(lab: Lab) -> None:
    probes = [
        ("globex-web-1", "web-1", "udp/67"),  # across tenants, same host
        ("web-1", "db-1", "udp/547"),  # across hosts
        ("fd00:2::21", "fd00:1::21", "udp/546"),
        ("203.0.113.9", "web-2", "udp/68"),
    ]
    assert _mismatches(lab, probes) == []


@builds_the_lab
def test_traffic_routed_into_the_bridge_gets_ingress_policy(lab: Lab) -> None:
    """The outside reaches web-2 and globex-web-2 through their host's IP stack (e.g. a host
    that is its VMs' router) instead of over the VM segment."""
    plan = lab.plan()
    hv2 = plan.host("hv2")
    moved = ["10.1.0.22/32", "10.2.0.22/32"]
    probes = [("203.0.113.9", "web-2", "tcp/443"), ("198.51.100.7", "globex-web-2", "https")]
    try:
        for dst in moved:
            _in_ns(plan.external.ns, "ip", "route", "replace", dst, "via", hv2.ipv4, "dev", UPLINK)
        assert _mismatches(lab, probes) == []
    finally:
        for dst in moved:
            _in_ns(plan.external.ns, "ip", "route", "replace", dst, "dev", VXLAN)


@builds_the_lab
def test_down_leaves_nothing(lab: Lab) -> None:
    """Last in the module: the CLI takes the lab down (the fixture's down is then a no-op)."""
    done = run_cli("lab", "down", "--name", lab.name)
    assert done.returncode == 0, done.stderr
    assert lab_namespaces(lab) == []
    assert [link for link in nsexec.root_links() if lab.names.owns(link)] == []
    assert not lab.paths.dir.exists()
