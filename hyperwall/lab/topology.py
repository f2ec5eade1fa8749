"""The lab's topology as a value: a `Catalog` in, a `LabPlan` of namespaces, links, addresses,
routes, rules, neighbours and sysctls out. Pure (no I/O); `lab.iproute` renders it into
iproute2 batch scripts and `lab.netns` executes them.

Routed attachment (docs/design/lab.md): each VM interface is a veth pair whose host side is
named `vm_ifname(mac)` and shares one MAC; the VM reaches everything through the link-local
gateway 169.254.1.1 / fe80::1. Hosts are joined by an underlay bridge in its own namespace;
an "external" namespace on the same bridge stands for the internet (every address outside
the lab is local there).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from hyperwall.dataplane.nft.render import vm_ifname
from hyperwall.lab.errors import LabInputError
from hyperwall.policy.model import Catalog, Workload

Role = Literal["host", "vm", "underlay", "external"]

LAB_NAME = re.compile(r"[a-z0-9]{1,12}")
SHARED_MAC = "ee:ee:ee:ee:ee:ee"  # every host-side VM link: one MAC, like Calico
GATEWAY4 = "169.254.1.1"
GATEWAY6 = "fe80::1"
UNDERLAY4 = ipaddress.IPv4Network("169.254.100.0/24")
UNDERLAY6 = ipaddress.IPv6Network("fd99:100::/64")
EXTERNAL_INDEX = 254  # the external namespace's index on the underlay
MAX_HOSTS = 253
UPLINK = "uplink"  # the underlay link inside a host or the external namespace
BRIDGE = "br0"
RESPONDER_PORT = 7  # the responders listen here; a nat table redirects every other port
TABLE_BASE = 100  # interface i > 0 of a VM routes its own addresses through table 100 + i
RULE_PRIORITY = 1000
_RESERVED = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    UNDERLAY6,
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)


class TopologyError(LabInputError):
    """The documents cannot be built into a lab (the message says why)."""


def check_lab_name(name: str) -> str:
    """Lab names are short and have no '-', so one lab's prefix never covers another's."""
    if not LAB_NAME.fullmatch(name):
        raise TopologyError(f"bad lab name {name!r}: expected 1-12 of [a-z0-9]")
    return name


@dataclass(frozen=True, slots=True)
class LabNames:
    """Every name a lab gives to kernel objects, all starting with `prefix`."""

    lab: str

    @property
    def prefix(self) -> str:
        return f"hwl-{self.lab}-"

    def host_ns(self, host: str) -> str:
        return f"{self.prefix}h-{host}"

    def vm_ns(self, key: str) -> str:
        # workload names have no '_', so "tenant_name" is unambiguous
        return f"{self.prefix}v-{key.replace('/', '_')}"

    @property
    def underlay_ns(self) -> str:
        return f"{self.prefix}u"

    @property
    def external_ns(self) -> str:
        return f"{self.prefix}x"

    def owns(self, name: str) -> bool:
        """Is `name` (a namespace or link) one of this lab's?"""
        rest = name.removeprefix(self.prefix)
        if rest == name:
            return False
        return rest in ("u", "x") or rest.startswith(("h-", "v-"))


# -- plan objects --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    role: Role
    owner: str  # host name, workload key, or "" for the underlay and external namespaces


@dataclass(frozen=True, slots=True)
class Veth:
    """A veth pair created in one step with each end directly in its namespace."""

    ns: str
    name: str
    mac: str
    peer_ns: str
    peer_name: str
    peer_mac: str


@dataclass(frozen=True, slots=True)
class Bridge:
    ns: str
    name: str
    ports: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Address:
    ns: str
    dev: str
    cidr: str  # /32 or /128 for VM addresses; IPv6 addresses always go without DAD


@dataclass(frozen=True, slots=True)
class Route:
    ns: str
    dst: str  # a CIDR; 0.0.0.0/0 and ::/0 for defaults
    dev: str
    via: str | None = None
    onlink: bool = False
    table: int | None = None  # None: main
    local: bool = False  # a `local` route (AnyIP: the external namespace owns the internet)


@dataclass(frozen=True, slots=True)
class Rule:
    ns: str
    src: str  # a /32 or /128
    table: int
    priority: int = RULE_PRIORITY


@dataclass(frozen=True, slots=True)
class Neighbour:
    ns: str
    dev: str
    address: str
    mac: str


@dataclass(frozen=True, slots=True)
class Sysctl:
    ns: str
    key: str  # '/'-separated (interface names may contain '.')
    value: str


@dataclass(frozen=True, slots=True)
class VmInterface:
    name: str
    mac: str
    ips: tuple[str, ...]
    host_ifname: str
    table: int | None  # policy-routing table for interfaces after the first


@dataclass(frozen=True, slots=True)
class LabVm:
    key: str
    name: str
    tenant: str | None
    host: str
    ns: str
    index: int
    interfaces: tuple[VmInterface, ...]

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(ip for iface in self.interfaces for ip in iface.ips)

    @property
    def socket(self) -> str:
        """The responder's unix socket file name in the lab's state folder."""
        return f"v{self.index}.sock"


@dataclass(frozen=True, slots=True)
class LabHost:
    """A host (or the external namespace) on the underlay."""

    name: str
    ns: str
    index: int
    ipv4: str
    ipv6: str
    mac: str


@dataclass(frozen=True, slots=True)
class LabPlan:
    names: LabNames
    hosts: tuple[LabHost, ...]
    external: LabHost
    vms: tuple[LabVm, ...]
    namespaces: tuple[Namespace, ...]
    veths: tuple[Veth, ...]
    bridges: tuple[Bridge, ...]
    addresses: tuple[Address, ...]
    routes: tuple[Route, ...]
    rules: tuple[Rule, ...]
    neighbours: tuple[Neighbour, ...]
    sysctls: tuple[Sysctl, ...]

    def host(self, name: str) -> LabHost:
        return next(h for h in self.hosts if h.name == name)

    def vm(self, key: str) -> LabVm:
        return next(v for v in self.vms if v.key == key)

    def owner(self, address: str) -> LabVm | None:
        """The VM that owns `address`, if any."""
        return next((v for v in self.vms if address in v.addresses), None)

    def links_in(self, ns: str) -> tuple[str, ...]:
        """Names of the links of namespace `ns` the plan creates (veth ends and bridges)."""
        return _links_in(ns, self.veths, self.bridges)

    def topology_key(self) -> tuple[object, ...]:
        """What `lab apply` may not change: everything but the policy and labels."""
        return (self.hosts, self.vms)


# -- building ------------------------------------------------------------------------------


def _links_in(ns: str, veths: Iterable[Veth], bridges: Iterable[Bridge]) -> tuple[str, ...]:
    ends = [v.name for v in veths if v.ns == ns]
    ends += [v.peer_name for v in veths if v.peer_ns == ns]
    ends += [b.name for b in bridges if b.ns == ns]
    return tuple(ends)


def _family(address: str) -> int:
    return 6 if ":" in address else 4


def _prefix(address: str) -> str:
    return f"{address}/{128 if _family(address) == 6 else 32}"


def _underlay(index: int, ns: str, name: str) -> LabHost:
    return LabHost(
        name=name,
        ns=ns,
        index=index,
        ipv4=str(UNDERLAY4.network_address + index),
        ipv6=str(UNDERLAY6.network_address + index),
        mac=f"02:00:a9:fe:64:{index:02x}",
    )


def _check_workload(w: Workload) -> None:
    for iface in w.interfaces:
        if iface.name in ("lo", ".", ".."):
            raise TopologyError(f"workload {w.key!r}: interface name {iface.name!r} is reserved")
        if iface.mac == SHARED_MAC:
            raise TopologyError(f"workload {w.key!r}: MAC {SHARED_MAC} is the lab gateway's")
        for ip in iface.ips:
            address = ipaddress.ip_address(ip)
            if any(address in net for net in _RESERVED):
                raise TopologyError(
                    f"workload {w.key!r}: address {ip} is reserved for the lab's own links"
                )
    names = [i.name for i in w.interfaces]
    if len(set(names)) != len(names):
        raise TopologyError(f"workload {w.key!r}: two interfaces share a name")


def _sysctls(ns: str, role: Role, links: tuple[str, ...]) -> list[Sysctl]:
    conf = ["all", "default", *links]
    out = [Sysctl(ns, f"net/ipv4/conf/{c}/rp_filter", "0") for c in conf]
    out += [Sysctl(ns, f"net/ipv6/conf/{c}/accept_ra", "0") for c in conf]
    if role == "host":
        out += [
            Sysctl(ns, "net/ipv4/ip_forward", "1"),
            Sysctl(ns, "net/ipv6/conf/all/forwarding", "1"),
            Sysctl(ns, "net/ipv4/conf/all/send_redirects", "0"),
            Sysctl(ns, "net/ipv4/conf/default/send_redirects", "0"),
        ]
    if role == "external":
        out += [
            Sysctl(ns, "net/ipv4/ip_nonlocal_bind", "1"),
            Sysctl(ns, "net/ipv6/ip_nonlocal_bind", "1"),
        ]
    return out


def build_plan(lab: str, catalog: Catalog) -> LabPlan:
    """The lab for `catalog`'s declared workloads; raise TopologyError if it cannot be built."""
    names = LabNames(check_lab_name(lab))
    workloads = sorted(catalog.workloads.values(), key=lambda w: w.key)
    for w in workloads:
        _check_workload(w)
    host_names = sorted({w.host for w in workloads})
    if len(host_names) > MAX_HOSTS:
        raise TopologyError(f"{len(host_names)} hosts: the lab's underlay holds {MAX_HOSTS}")
    hosts = tuple(_underlay(i + 1, names.host_ns(h), h) for i, h in enumerate(host_names))
    external = _underlay(EXTERNAL_INDEX, names.external_ns, "external")
    by_host = {h.name: h for h in hosts}

    vms: list[LabVm] = []
    for index, w in enumerate(workloads):
        ifaces = tuple(
            VmInterface(
                name=iface.name,
                mac=iface.mac,
                ips=iface.ips,
                host_ifname=vm_ifname(iface.mac),
                table=TABLE_BASE + i if i > 0 else None,
            )
            for i, iface in enumerate(w.interfaces)
        )
        vms.append(LabVm(w.key, w.name, w.tenant, w.host, names.vm_ns(w.key), index, ifaces))

    namespaces = [
        Namespace(names.underlay_ns, "underlay", ""),
        Namespace(external.ns, "external", ""),
    ]
    namespaces += [Namespace(h.ns, "host", h.name) for h in hosts]
    namespaces += [Namespace(v.ns, "vm", v.key) for v in vms]

    veths: list[Veth] = []
    ports: list[str] = []
    for h in (*hosts, external):
        port = "x" if h is external else f"h{h.index}"
        veths.append(Veth(h.ns, UPLINK, h.mac, names.underlay_ns, port, _port_mac(h.index)))
        ports.append(port)
    bridges = (Bridge(names.underlay_ns, BRIDGE, tuple(ports)),)

    addresses: list[Address] = []
    routes: list[Route] = []
    rules: list[Rule] = []
    neighbours: list[Neighbour] = []
    members = (*hosts, external)
    for h in members:
        addresses.append(Address(h.ns, UPLINK, f"{h.ipv4}/{UNDERLAY4.prefixlen}"))
        addresses.append(Address(h.ns, UPLINK, f"{h.ipv6}/{UNDERLAY6.prefixlen}"))
        for other in members:
            if other is not h:
                neighbours.append(Neighbour(h.ns, UPLINK, other.ipv4, other.mac))
                neighbours.append(Neighbour(h.ns, UPLINK, other.ipv6, other.mac))
    for h in hosts:
        routes.append(Route(h.ns, "0.0.0.0/0", UPLINK, via=external.ipv4))
        routes.append(Route(h.ns, "::/0", UPLINK, via=external.ipv6))
    routes.append(Route(external.ns, "0.0.0.0/0", "lo", table=254, local=True))
    routes.append(Route(external.ns, "::/0", "lo", table=254, local=True))

    for vm in vms:
        host = by_host[vm.host]
        for i, iface in enumerate(vm.interfaces):
            veths.append(Veth(host.ns, iface.host_ifname, SHARED_MAC, vm.ns, iface.name, iface.mac))
            addresses.append(Address(host.ns, iface.host_ifname, f"{GATEWAY6}/64"))
            neighbours.append(Neighbour(vm.ns, iface.name, GATEWAY4, SHARED_MAC))
            neighbours.append(Neighbour(vm.ns, iface.name, GATEWAY6, SHARED_MAC))
            if i == 0:
                routes.append(Route(vm.ns, "0.0.0.0/0", iface.name, GATEWAY4, onlink=True))
                routes.append(Route(vm.ns, "::/0", iface.name, GATEWAY6))
            if iface.table is not None:
                routes.append(
                    Route(vm.ns, "0.0.0.0/0", iface.name, GATEWAY4, True, table=iface.table)
                )
                routes.append(Route(vm.ns, "::/0", iface.name, GATEWAY6, table=iface.table))
            for ip in iface.ips:
                addresses.append(Address(vm.ns, iface.name, _prefix(ip)))
                if iface.table is not None:
                    rules.append(Rule(vm.ns, _prefix(ip), iface.table))
                routes.append(Route(host.ns, _prefix(ip), iface.host_ifname))
                neighbours.append(Neighbour(host.ns, iface.host_ifname, ip, iface.mac))
                for other in hosts:
                    if other is not host:
                        via = host.ipv6 if _family(ip) == 6 else host.ipv4
                        routes.append(Route(other.ns, _prefix(ip), UPLINK, via=via))
                via = host.ipv6 if _family(ip) == 6 else host.ipv4
                routes.append(Route(external.ns, _prefix(ip), UPLINK, via=via))

    sysctls: list[Sysctl] = []
    for ns in namespaces:
        if ns.role != "underlay":
            sysctls += _sysctls(ns.name, ns.role, _links_in(ns.name, veths, bridges))
    return LabPlan(
        names=names,
        hosts=hosts,
        external=external,
        vms=tuple(vms),
        namespaces=tuple(namespaces),
        veths=tuple(veths),
        bridges=bridges,
        addresses=tuple(addresses),
        routes=tuple(routes),
        rules=tuple(rules),
        neighbours=tuple(neighbours),
        sysctls=tuple(sysctls),
    )


def _port_mac(index: int) -> str:
    return f"02:00:a9:fe:65:{index:02x}"
