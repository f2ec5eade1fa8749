"""The lab's topology as a value: a `Catalog` in, a `LabPlan` of namespaces, links, addresses,
routes, rules, neighbours and sysctls out. Pure (no I/O); `lab.iproute` renders it into
iproute2 batch scripts and `lab.nsexec` executes them.

Routed attachment (the default, docs/design/lab.md): each VM interface is a veth pair whose
host side is named `vm_ifname(mac)` and shares one MAC; the VM reaches everything through the
link-local gateway 169.254.1.1 / fe80::1. Hosts are joined by an underlay bridge in its own
namespace; an "external" namespace on the same bridge stands for the internet (every address
outside the lab is local there).

Bridge attachment (`mode="bridge"`): the host side of each VM link is a port of the host's
Linux bridge `hwbr0`; one VXLAN segment (`hwvx0` in every host and in the external namespace,
head-end replication by FDB flood entries over the underlay) makes all VMs and the external
namespace one flat L2 segment. VMs resolve every destination directly (on-link defaults).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from hyperwall.attachment import ATTACHMENTS, Attachment
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
# bridge mode
HOST_BRIDGE = "hwbr0"  # the VM ports' bridge in each host namespace
VXLAN = "hwvx0"  # the VXLAN device of the flat VM segment (hosts: a port of HOST_BRIDGE)
VXLAN_ID = 42
VXLAN_PORT = 4789
VXLAN_OVERHEAD = 50  # outer IPv4 + UDP + VXLAN + inner Ethernet header
VM_MTU = 1500
UNDERLAY_MTU_BRIDGED = VM_MTU + VXLAN_OVERHEAD  # so that VMs keep a 1500-byte MTU
BRIDGE_ADDRESS4 = ipaddress.IPv4Network("169.254.1.0/24")  # member k: 169.254.1.k/32
BRIDGE_ADDRESS6 = ipaddress.IPv6Network("fe80::1:0/112")  # member k: fe80::1:k/64
TAP_MAC_PREFIX = "fe"  # bridge mode: host side of a VM link = the VM's MAC, first octet fe
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
    mtu: int | None = None  # None: the kernel's default (1500)


@dataclass(frozen=True, slots=True)
class Bridge:
    ns: str
    name: str
    ports: tuple[str, ...]
    mac: str | None = None  # None: the kernel's choice (the lowest port MAC)


@dataclass(frozen=True, slots=True)
class Vxlan:
    """A VXLAN device over the underlay link `dev`, optionally a port of bridge `master`."""

    ns: str
    name: str
    mac: str
    vni: int
    local: str  # the member's underlay IPv4 address
    dev: str
    port: int
    mtu: int
    master: str | None = None


@dataclass(frozen=True, slots=True)
class FloodEntry:
    """`bridge fdb append 00:00:00:00:00:00 dev DEV dst DST`: BUM traffic also goes to DST."""

    ns: str
    dev: str
    dst: str


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
    mode: Attachment = "routed"
    vxlans: tuple[Vxlan, ...] = ()
    flood: tuple[FloodEntry, ...] = ()

    def host(self, name: str) -> LabHost:
        return next(h for h in self.hosts if h.name == name)

    def vm(self, key: str) -> LabVm:
        return next(v for v in self.vms if v.key == key)

    def owner(self, address: str) -> LabVm | None:
        """The VM that owns `address`, if any."""
        return next((v for v in self.vms if address in v.addresses), None)

    def links_in(self, ns: str) -> tuple[str, ...]:
        """Names of the links of namespace `ns` the plan creates (veth ends, bridges, VXLAN)."""
        return (
            *_links_in(ns, self.veths, self.bridges),
            *(x.name for x in self.vxlans if x.ns == ns),
        )

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
        mac=_lab_mac(0x64, index),
    )


def _lab_mac(kind: int, index: int) -> str:
    """The lab's own MACs: 02:00:a9:fe:KIND:INDEX (64 uplink, 65 underlay port, 66 VXLAN,
    67 host bridge)."""
    return f"02:00:a9:fe:{kind:02x}:{index:02x}"


def tap_mac(mac: str) -> str:
    """Bridge mode: the MAC of the host side of a VM link (libvirt's convention: first octet
    fe), unique because VM MACs are."""
    return TAP_MAC_PREFIX + mac.lower()[2:]


def bridge_address4(index: int) -> str:
    """Bridge mode: member `index`'s address on the VM segment (a /32)."""
    return str(BRIDGE_ADDRESS4.network_address + index)


def bridge_address6(index: int) -> str:
    """Bridge mode: member `index`'s link-local address on the VM segment (a /64)."""
    return str(BRIDGE_ADDRESS6.network_address + index)


def _check_workload(w: Workload, mode: Attachment) -> None:
    for iface in w.interfaces:
        if iface.name in ("lo", ".", ".."):
            raise TopologyError(f"workload {w.key!r}: interface name {iface.name!r} is reserved")
        if iface.mac == SHARED_MAC:
            raise TopologyError(f"workload {w.key!r}: MAC {SHARED_MAC} is the lab gateway's")
        mac = iface.mac.lower()
        if mode == "bridge" and (
            mac.startswith(TAP_MAC_PREFIX + ":") or mac.startswith("02:00:a9:fe:")
        ):
            raise TopologyError(
                f"workload {w.key!r}: MAC {iface.mac} is reserved in bridge mode (fe:... for the"
                " host side of VM links, 02:00:a9:fe:... for the lab's own devices)"
            )
        for ip in iface.ips:
            address = ipaddress.ip_address(ip)
            if any(address in net for net in _RESERVED):
                raise TopologyError(
                    f"workload {w.key!r}: address {ip} is reserved for the lab's own links"
                )
    names = [i.name for i in w.interfaces]
    if len(set(names)) != len(names):
        raise TopologyError(f"workload {w.key!r}: two interfaces share a name")


def _sysctls(ns: str, role: Role, links: tuple[str, ...], mode: Attachment) -> list[Sysctl]:
    """Per-link values for the links that exist before the sysctls are set (veth ends); links
    made later (bridges, VXLAN) inherit `default`."""
    conf = ["all", "default", *links]
    out = [Sysctl(ns, f"net/ipv4/conf/{c}/rp_filter", "0") for c in conf]
    out += [Sysctl(ns, f"net/ipv6/conf/{c}/accept_ra", "0") for c in conf]
    if role == "host":
        out += [
            Sysctl(ns, "net/ipv4/ip_forward", "1"),
            Sysctl(ns, "net/ipv6/conf/all/forwarding", "1"),
            Sysctl(ns, "net/ipv4/conf/all/send_redirects", "0"),
            Sysctl(ns, "net/ipv4/conf/default/send_redirects", "0"),
            # the lab probes in bursts: the kernel's ICMP rate limit would turn a UDP/ICMP
            # reject into a silent drop (production hosts keep the default)
            Sysctl(ns, "net/ipv4/icmp_ratelimit", "0"),
            Sysctl(ns, "net/ipv6/icmp/ratelimit", "0"),
        ]
        if mode == "bridge":  # bridged IPv4/IPv6 through the inet hooks (the agent's table)
            out += [
                Sysctl(ns, "net/bridge/bridge-nf-call-iptables", "1"),
                Sysctl(ns, "net/bridge/bridge-nf-call-ip6tables", "1"),
            ]
    if role == "vm" and mode == "bridge":
        # a VM with two interfaces on the one segment answers ARP for an address only on the
        # interface that owns it, and asks from it (otherwise anti-spoofing drops the rest)
        out += [
            Sysctl(ns, "net/ipv4/conf/all/arp_ignore", "1"),
            Sysctl(ns, "net/ipv4/conf/all/arp_announce", "2"),
        ]
    if role == "external":
        out += [
            Sysctl(ns, "net/ipv4/ip_nonlocal_bind", "1"),
            Sysctl(ns, "net/ipv6/ip_nonlocal_bind", "1"),
        ]
    return out


@dataclass
class _Parts:
    """What `build_plan` collects before freezing it into a `LabPlan`."""

    veths: list[Veth] = field(default_factory=list)
    bridges: list[Bridge] = field(default_factory=list)
    vxlans: list[Vxlan] = field(default_factory=list)
    flood: list[FloodEntry] = field(default_factory=list)
    addresses: list[Address] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    neighbours: list[Neighbour] = field(default_factory=list)


def build_plan(lab: str, catalog: Catalog, mode: Attachment = "routed") -> LabPlan:
    """The lab for `catalog`'s declared workloads; raise TopologyError if it cannot be built."""
    if mode not in ATTACHMENTS:
        raise TopologyError(f"bad mode {mode!r}: expected one of {', '.join(ATTACHMENTS)}")
    names = LabNames(check_lab_name(lab))
    workloads = sorted(catalog.workloads.values(), key=lambda w: w.key)
    for w in workloads:
        _check_workload(w, mode)
    host_names = sorted({w.host for w in workloads})
    if len(host_names) > MAX_HOSTS:
        raise TopologyError(f"{len(host_names)} hosts: the lab's underlay holds {MAX_HOSTS}")
    hosts = tuple(_underlay(i + 1, names.host_ns(h), h) for i, h in enumerate(host_names))
    external = _underlay(EXTERNAL_INDEX, names.external_ns, "external")

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

    parts = _Parts()
    _underlay_links(parts, names, hosts, external, mode)
    if mode == "bridge":
        _attach_bridged(parts, vms, hosts, external)
    else:
        _attach_routed(parts, vms, hosts, external)

    sysctls: list[Sysctl] = []
    for ns in namespaces:
        if ns.role != "underlay":
            links = _links_in(ns.name, parts.veths, ())
            sysctls += _sysctls(ns.name, ns.role, links, mode)
    return LabPlan(
        names=names,
        hosts=hosts,
        external=external,
        vms=tuple(vms),
        namespaces=tuple(namespaces),
        veths=tuple(parts.veths),
        bridges=tuple(parts.bridges),
        addresses=tuple(parts.addresses),
        routes=tuple(parts.routes),
        rules=tuple(parts.rules),
        neighbours=tuple(parts.neighbours),
        sysctls=tuple(sysctls),
        mode=mode,
        vxlans=tuple(parts.vxlans),
        flood=tuple(parts.flood),
    )


def _underlay_links(
    parts: _Parts, names: LabNames, hosts: tuple[LabHost, ...], external: LabHost, mode: Attachment
) -> None:
    """The underlay bridge, every member's uplink, its addresses, neighbours, default routes.

    In bridge mode the underlay also carries VXLAN, so its MTU leaves room for the
    encapsulation of 1500-byte VM frames.
    """
    mtu = UNDERLAY_MTU_BRIDGED if mode == "bridge" else None
    members = (*hosts, external)
    ports: list[str] = []
    for h in members:
        port = "x" if h is external else f"h{h.index}"
        veth = Veth(h.ns, UPLINK, h.mac, names.underlay_ns, port, _lab_mac(0x65, h.index), mtu)
        parts.veths.append(veth)
        ports.append(port)
    parts.bridges.append(Bridge(names.underlay_ns, BRIDGE, tuple(ports)))
    for h in members:
        parts.addresses.append(Address(h.ns, UPLINK, f"{h.ipv4}/{UNDERLAY4.prefixlen}"))
        parts.addresses.append(Address(h.ns, UPLINK, f"{h.ipv6}/{UNDERLAY6.prefixlen}"))
        for other in members:
            if other is not h:
                parts.neighbours.append(Neighbour(h.ns, UPLINK, other.ipv4, other.mac))
                parts.neighbours.append(Neighbour(h.ns, UPLINK, other.ipv6, other.mac))
    for h in hosts:
        parts.routes.append(Route(h.ns, "0.0.0.0/0", UPLINK, via=external.ipv4))
        parts.routes.append(Route(h.ns, "::/0", UPLINK, via=external.ipv6))
    parts.routes.append(Route(external.ns, "0.0.0.0/0", "lo", table=254, local=True))
    parts.routes.append(Route(external.ns, "::/0", "lo", table=254, local=True))


def _attach_routed(
    parts: _Parts, vms: list[LabVm], hosts: tuple[LabHost, ...], external: LabHost
) -> None:
    """Routed VM links: gateway 169.254.1.1 / fe80::1 with permanent neighbours both ways;
    other hosts and the external namespace route a VM's addresses via its host."""
    by_host = {h.name: h for h in hosts}
    for vm in vms:
        host = by_host[vm.host]
        for i, iface in enumerate(vm.interfaces):
            parts.veths.append(
                Veth(host.ns, iface.host_ifname, SHARED_MAC, vm.ns, iface.name, iface.mac)
            )
            parts.addresses.append(Address(host.ns, iface.host_ifname, f"{GATEWAY6}/64"))
            parts.neighbours.append(Neighbour(vm.ns, iface.name, GATEWAY4, SHARED_MAC))
            parts.neighbours.append(Neighbour(vm.ns, iface.name, GATEWAY6, SHARED_MAC))
            if i == 0:
                parts.routes.append(Route(vm.ns, "0.0.0.0/0", iface.name, GATEWAY4, onlink=True))
                parts.routes.append(Route(vm.ns, "::/0", iface.name, GATEWAY6))
            if iface.table is not None:
                parts.routes.append(
                    Route(vm.ns, "0.0.0.0/0", iface.name, GATEWAY4, True, table=iface.table)
                )
                parts.routes.append(Route(vm.ns, "::/0", iface.name, GATEWAY6, table=iface.table))
            for ip in iface.ips:
                parts.addresses.append(Address(vm.ns, iface.name, _prefix(ip)))
                if iface.table is not None:
                    parts.rules.append(Rule(vm.ns, _prefix(ip), iface.table))
                parts.routes.append(Route(host.ns, _prefix(ip), iface.host_ifname))
                parts.neighbours.append(Neighbour(host.ns, iface.host_ifname, ip, iface.mac))
                via = host.ipv6 if _family(ip) == 6 else host.ipv4
                for other in hosts:
                    if other is not host:
                        parts.routes.append(Route(other.ns, _prefix(ip), UPLINK, via=via))
                parts.routes.append(Route(external.ns, _prefix(ip), UPLINK, via=via))


def _attach_bridged(
    parts: _Parts, vms: list[LabVm], hosts: tuple[LabHost, ...], external: LabHost
) -> None:
    """Bridged VM links on one flat segment: VXLAN between the hosts and the external namespace.

    Every host: bridge `hwbr0` (ports: its VMs' `hwt...` links and `hwvx0`) with an address
    (169.254.1.k/32, fe80::1:k/64) and a route to every VM address of the fleet through it, so
    that `reject` from the inet hooks can answer bridged packets. The external namespace is a
    member of the segment too (`hwvx0` with a route per VM address): outside traffic is
    bridged into the hosts, like a router on a libvirt bridge's uplink. No neighbour entries:
    VMs, hosts and the external namespace resolve each other by ARP/ND.
    """
    members = (*hosts, external)
    for m in members:
        parts.vxlans.append(
            Vxlan(
                m.ns, VXLAN, _lab_mac(0x66, m.index), VXLAN_ID, m.ipv4, UPLINK, VXLAN_PORT, VM_MTU
            )
        )
        parts.flood += [FloodEntry(m.ns, VXLAN, o.ipv4) for o in members if o is not m]
        dev = VXLAN if m is external else HOST_BRIDGE
        parts.addresses.append(Address(m.ns, dev, f"{bridge_address4(m.index)}/32"))
        parts.addresses.append(Address(m.ns, dev, f"{bridge_address6(m.index)}/64"))
    for h in hosts:
        ports = [iface.host_ifname for vm in vms if vm.host == h.name for iface in vm.interfaces]
        mac = _lab_mac(0x67, h.index)
        parts.bridges.append(Bridge(h.ns, HOST_BRIDGE, (*ports, VXLAN), mac))
    by_host = {h.name: h for h in hosts}
    for vm in vms:
        host = by_host[vm.host]
        for i, iface in enumerate(vm.interfaces):
            mac = tap_mac(iface.mac)
            parts.veths.append(Veth(host.ns, iface.host_ifname, mac, vm.ns, iface.name, iface.mac))
            if i == 0:
                parts.routes.append(Route(vm.ns, "0.0.0.0/0", iface.name))
                parts.routes.append(Route(vm.ns, "::/0", iface.name))
            if iface.table is not None:
                parts.routes.append(Route(vm.ns, "0.0.0.0/0", iface.name, table=iface.table))
                parts.routes.append(Route(vm.ns, "::/0", iface.name, table=iface.table))
            for ip in iface.ips:
                parts.addresses.append(Address(vm.ns, iface.name, _prefix(ip)))
                if iface.table is not None:
                    parts.rules.append(Rule(vm.ns, _prefix(ip), iface.table))
                parts.routes += [Route(h.ns, _prefix(ip), HOST_BRIDGE) for h in hosts]
                parts.routes.append(Route(external.ns, _prefix(ip), VXLAN))
