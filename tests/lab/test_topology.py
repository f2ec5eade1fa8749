"""The lab's plan and its iproute2 rendering, without root: `lab.topology`, `lab.iproute`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hyperwall.dataplane.nft.render import vm_ifname
from hyperwall.io.files import load_catalog
from hyperwall.lab import iproute
from hyperwall.lab.topology import (
    GATEWAY4,
    GATEWAY6,
    SHARED_MAC,
    LabNames,
    LabPlan,
    TopologyError,
    build_plan,
    check_lab_name,
)
from hyperwall.policy.model import Catalog, Interface

from .conftest import EXAMPLES


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog([EXAMPLES])


@pytest.fixture(scope="module")
def plan(catalog: Catalog) -> LabPlan:
    return build_plan("t1", catalog)


def test_namespaces_per_host_and_vm_all_with_the_prefix(plan: LabPlan, catalog: Catalog) -> None:
    roles = [ns.role for ns in plan.namespaces]
    assert roles.count("host") == 2
    assert roles.count("vm") == len(catalog.workloads)
    assert roles.count("underlay") == roles.count("external") == 1
    assert all(ns.name.startswith("hwl-t1-") and plan.names.owns(ns.name) for ns in plan.namespaces)
    assert len({ns.name for ns in plan.namespaces}) == len(plan.namespaces)
    assert "hwl-t1-h-hv1" in [ns.name for ns in plan.namespaces]
    assert plan.vm("acme/web-1").ns == "hwl-t1-v-acme_web-1"
    assert plan.vm("dns-1").ns == "hwl-t1-v-dns-1"


def test_prefixes_of_labs_never_overlap() -> None:
    a, b = LabNames("t1"), LabNames("t1x")
    assert not a.owns(b.host_ns("hv1")) and not a.owns(b.underlay_ns)
    assert not b.owns(a.vm_ns("acme/web-1"))
    assert a.owns(a.external_ns) and not a.owns("hwl-t1-zzz")
    for bad in ("", "a-b", "UP", "x" * 13, "hwl_1"):
        with pytest.raises(TopologyError):
            check_lab_name(bad)


def test_vm_links_are_routed_attachments(plan: LabPlan) -> None:
    web = plan.vm("acme/web-1")
    (iface,) = web.interfaces
    assert iface.host_ifname == vm_ifname("52:54:00:01:00:21") == "hwt525400010021"
    veth = next(v for v in plan.veths if v.peer_ns == web.ns)
    assert (veth.ns, veth.name, veth.mac) == ("hwl-t1-h-hv1", iface.host_ifname, SHARED_MAC)
    assert (veth.peer_name, veth.peer_mac) == ("eth0", "52:54:00:01:00:21")
    assert all(len(name) <= 15 for v in plan.veths for name in (v.name, v.peer_name))
    vm_addresses = {a.cidr for a in plan.addresses if a.ns == web.ns}
    assert vm_addresses == {"10.1.0.21/32", "fd00:1::21/128"}
    vm_routes = {(r.dst, r.via, r.onlink) for r in plan.routes if r.ns == web.ns}
    assert vm_routes == {("0.0.0.0/0", GATEWAY4, True), ("::/0", GATEWAY6, False)}
    vm_neigh = {(n.address, n.mac) for n in plan.neighbours if n.ns == web.ns}
    assert vm_neigh == {(GATEWAY4, SHARED_MAC), (GATEWAY6, SHARED_MAC)}
    host = "hwl-t1-h-hv1"
    assert {(r.dst, r.dev, r.via) for r in plan.routes if r.ns == host} >= {
        ("10.1.0.21/32", iface.host_ifname, None),
        ("fd00:1::21/128", iface.host_ifname, None),
    }
    host_neigh = {(n.dev, n.address, n.mac) for n in plan.neighbours if n.ns == host}
    assert (iface.host_ifname, "10.1.0.21", iface.mac) in host_neigh
    assert (iface.host_ifname, "fd00:1::21", iface.mac) in host_neigh
    assert any(
        a.ns == host and a.dev == iface.host_ifname and a.cidr == "fe80::1/64"
        for a in plan.addresses
    )


def test_second_interface_routes_its_own_addresses_by_source(plan: LabPlan) -> None:
    db = plan.vm("acme/db-1")
    eth0, eth1 = db.interfaces
    assert eth0.table is None and eth1.table == 101
    rules = {(r.src, r.table) for r in plan.rules if r.ns == db.ns}
    assert rules == {("10.1.0.42/32", 101), ("fd00:1::42/128", 101)}
    table = {(r.dst, r.dev) for r in plan.routes if r.ns == db.ns and r.table == 101}
    assert table == {("0.0.0.0/0", "eth1"), ("::/0", "eth1")}
    main = {(r.dst, r.dev) for r in plan.routes if r.ns == db.ns and r.table is None}
    assert main == {("0.0.0.0/0", "eth0"), ("::/0", "eth0")}


def test_underlay_routes_remote_vms_and_the_outside(plan: LabPlan) -> None:
    hv1, hv2 = plan.host("hv1"), plan.host("hv2")
    assert (hv1.ipv4, hv2.ipv4, plan.external.ipv4) == (
        "169.254.100.1",
        "169.254.100.2",
        "169.254.100.254",
    )
    routes = {(r.ns, r.dst): r.via for r in plan.routes}
    assert routes[(hv1.ns, "10.1.0.22/32")] == hv2.ipv4  # web-2 runs on hv2
    assert routes[(hv2.ns, "fd00:1::21/128")] == hv1.ipv6  # web-1 runs on hv1
    assert routes[(hv1.ns, "0.0.0.0/0")] == plan.external.ipv4
    assert routes[(hv2.ns, "::/0")] == plan.external.ipv6
    for vm in plan.vms:
        for ip in vm.addresses:
            prefix = f"{ip}/{128 if ':' in ip else 32}"
            via = plan.host(vm.host).ipv6 if ":" in ip else plan.host(vm.host).ipv4
            assert routes[(plan.external.ns, prefix)] == via
    local = [r for r in plan.routes if r.local]
    assert {(r.ns, r.dst, r.table) for r in local} == {
        (plan.external.ns, "0.0.0.0/0", 254),
        (plan.external.ns, "::/0", 254),
    }
    (bridge,) = plan.bridges
    assert bridge.ns == plan.names.underlay_ns and len(bridge.ports) == 3


def test_host_sysctls_cover_every_link(plan: LabPlan) -> None:
    hv1 = plan.host("hv1").ns
    values = {s.key: s.value for s in plan.sysctls if s.ns == hv1}
    assert values["net/ipv4/ip_forward"] == "1"
    assert values["net/ipv6/conf/all/forwarding"] == "1"
    for link in ("all", "default", "uplink", "hwt525400010021"):
        assert values[f"net/ipv4/conf/{link}/rp_filter"] == "0"
        assert values[f"net/ipv6/conf/{link}/accept_ra"] == "0"
    external = {s.key: s.value for s in plan.sysctls if s.ns == plan.external.ns}
    assert external["net/ipv6/ip_nonlocal_bind"] == "1"


def test_plan_is_a_value(catalog: Catalog, plan: LabPlan) -> None:
    assert build_plan("t1", catalog) == plan
    assert build_plan("t2", catalog) != plan


def test_reserved_addresses_and_names_are_refused(catalog: Catalog) -> None:
    w = catalog.workloads["acme/web-1"]
    for iface in (
        Interface("eth0", "52:54:00:01:00:21", ("169.254.1.1",)),
        Interface("lo", "52:54:00:01:00:21", ()),
        Interface("eth0", SHARED_MAC, ()),
    ):
        bad = dataclasses.replace(w, interfaces=(iface,))
        broken = dataclasses.replace(catalog, workloads={**catalog.workloads, w.key: bad})
        with pytest.raises(TopologyError):
            build_plan("t1", broken)


def test_rendered_batches(plan: LabPlan) -> None:
    veths = iproute.veth_lines(plan)
    assert (
        "link add hwt525400010021 netns hwl-t1-h-hv1 address ee:ee:ee:ee:ee:ee type veth"
        " peer name eth0 netns hwl-t1-v-acme_web-1 address 52:54:00:01:00:21"
    ) in veths
    vm = iproute.namespace_lines(plan, "hwl-t1-v-acme_web-1")
    assert vm[0] == "link set lo up"
    assert vm.index("link set eth0 addrgenmode none") < vm.index("link set eth0 up")
    assert "address add fd00:1::21/128 dev eth0 nodad" in vm
    assert "address add 10.1.0.21/32 dev eth0" in vm
    assert "route add 0.0.0.0/0 via 169.254.1.1 dev eth0 onlink" in vm
    assert "neigh replace fe80::1 lladdr ee:ee:ee:ee:ee:ee dev eth0 nud permanent" in vm
    assert not any(line.startswith("rule") for line in vm)
    db = plan.vm("acme/db-1").ns
    assert iproute.rule_lines(plan, db, 4) == ["rule add from 10.1.0.42/32 table 101 pref 1000"]
    assert iproute.rule_lines(plan, db, 6) == ["rule add from fd00:1::42/128 table 101 pref 1000"]
    underlay = iproute.namespace_lines(plan, plan.names.underlay_ns)
    assert "link add br0 type bridge stp_state 0 mcast_snooping 0" in underlay
    assert "link set h1 master br0" in underlay
    external = iproute.namespace_lines(plan, plan.external.ns)
    assert "route add local 0.0.0.0/0 dev lo table 254" in external
    assert "redirect to :7" in iproute.redirect_ruleset()


def test_single_host_lab(tmp_path: Path) -> None:
    (tmp_path / "w.yaml").write_text(
        "apiVersion: hyperwall.io/v1\nkind: Workload\nmetadata: {name: a}\n"
        "spec:\n  host: only\n  interfaces:\n"
        "    - {name: eth0, mac: '52:54:00:00:00:01', ips: [10.0.0.1]}\n"
    )
    plan = build_plan("t1", load_catalog([tmp_path]))
    assert [h.name for h in plan.hosts] == ["only"]
    assert [v.key for v in plan.vms] == ["a"]
    assert not any(
        r.ns == plan.hosts[0].ns and r.dst == "10.0.0.1/32" and r.via for r in plan.routes
    )
