"""The kernel side of moving one VM between lab hosts, as a value. Pure (no I/O).

Counterpart of `lab.migrate` (which runs it) and `lab.topology` (where every line here comes
from): the switchover is derived from two plans of the same lab, the one with the VM where
it runs now and the one with the VM on the destination (`topology.build_plan` on the changed
catalog), never written by hand, so routed and bridge attachment both work.

- `links`: the host sides of the VM's links; each moves with `ip link set DEV netns DEST`
  (detach and attach, as a hypervisor's switchover looks to the network). Whatever the
  source had on them (addresses, routes, neighbours) leaves with them: the kernel flushes a
  link's configuration when it changes namespace.
- `sysctls`, `attach`: the destination's per-link sysctls, then one batch: links up (bridge
  mode: as ports of the host bridge), and every address, neighbour and route of the new
  plan that concerns the VM, all with `replace` semantics.
- `reroute`: per other namespace (every other host, the source included, and the external
  namespace), the new plan's routes and neighbours that concern the VM, `replace`d: the
  underlay follows the VM.
- `remove`: what the old plan had that the new one has no key for (no route of that
  destination and table, no neighbour of that address on that link), outside the moved
  links. Empty for both modes today; kept so a future attachment stays correct.
- `resolve`: bridge mode only: in the VM's namespace, its neighbour entries still being
  resolved are dropped. The VM's veth lost carrier while its peer moved (a lab artifact: a
  guest's NIC keeps carrier through a real switchover); an ARP/ND request sent meanwhile is
  lost and the kernel would ask again only after `retrans_time` (1 s). Dropped, the next
  packet asks at once. (Routed mode: the VM's neighbours are permanent.)
- `fdb`: bridge mode only: the VM's MACs are deleted from every segment member's VXLAN and
  bridge forwarding tables (learned at the source's VTEP or port), so frames to the VM are
  flooded until the members learn its new place (what QEMU's self-announcement achieves).

Every line is idempotent or run without `check` (`remove`, `fdb`), so running the same
switchover again after a crash at any point converges to the new plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hyperwall.lab import iproute
from hyperwall.lab.topology import (
    VXLAN,
    LabPlan,
    LabVm,
    Neighbour,
    Route,
    TopologyError,
)


@dataclass(frozen=True, slots=True)
class Switchover:
    vm: str
    source: str  # host name
    dest: str
    source_ns: str
    dest_ns: str
    links: tuple[str, ...]  # host-side link names, in interface order
    sysctls: tuple[str, ...]  # `sysctl -w` assignments in dest_ns
    attach: tuple[str, ...]  # `ip -n DEST -batch` lines
    reroute: Mapping[str, tuple[str, ...]]  # namespace -> `ip -n NS -batch` lines
    remove: Mapping[str, tuple[str, ...]]  # namespace -> `ip -n NS -batch` lines (unchecked)
    fdb: Mapping[str, tuple[str, ...]]  # namespace -> `bridge -n NS -batch` lines (unchecked)
    vm_ns: str = ""
    resolve: tuple[str, ...] = ()  # `ip -n VM -batch` lines (unchecked)

    def move_lines(self) -> tuple[str, ...]:
        """`ip -n SOURCE -batch` lines: every link to the destination's namespace."""
        return tuple(f"link set {link} netns {self.dest_ns}" for link in self.links)


def _prefixes(vm: LabVm) -> set[str]:
    return {f"{ip}/{128 if ':' in ip else 32}" for ip in vm.addresses}


def _route_key(r: Route) -> tuple[str, str, int | None]:
    return (r.ns, r.dst, r.table)


def _neighbour_key(n: Neighbour) -> tuple[str, str, str]:
    return (n.ns, n.dev, n.address)


def _vm_namespace_view(plan: LabPlan, vm: LabVm) -> tuple[object, ...]:
    """Everything of the plan inside the VM's own namespace (must not depend on its host)."""
    return (
        tuple(a for a in plan.addresses if a.ns == vm.ns),
        tuple(r for r in plan.routes if r.ns == vm.ns),
        tuple(r for r in plan.rules if r.ns == vm.ns),
        tuple(n for n in plan.neighbours if n.ns == vm.ns),
        tuple(s for s in plan.sysctls if s.ns == vm.ns),
    )


def plan_switchover(old: LabPlan, new: LabPlan, key: str) -> Switchover:
    """The switchover of VM `key` from its host in `old` to its host in `new`.

    `old` and `new` are plans of the same lab that differ only in that VM's host; raise
    TopologyError otherwise.
    """
    vm_old, vm_new = old.vm(key), new.vm(key)
    if vm_old.host == vm_new.host:
        raise TopologyError(f"{key} runs on {vm_new.host} in both plans: nothing moves")
    if old.hosts != new.hosts or old.mode != new.mode or old.names != new.names:
        raise TopologyError("a migration cannot change the lab's hosts or mode")
    if _vm_namespace_view(old, vm_old) != _vm_namespace_view(new, vm_new):
        raise TopologyError(f"{key}'s own namespace would change with its host")
    source, dest = old.host(vm_old.host), new.host(vm_new.host)
    links = tuple(iface.host_ifname for iface in vm_new.interfaces)
    moved = set(links)
    prefixes = _prefixes(vm_new)
    ips = set(vm_new.addresses)
    others = [h.ns for h in new.hosts if h.ns != dest.ns] + [new.external.ns]

    def routes(plan: LabPlan, ns: str) -> list[Route]:
        return [r for r in plan.routes if r.ns == ns and (r.dst in prefixes or r.dev in moved)]

    def neighbours(plan: LabPlan, ns: str) -> list[Neighbour]:
        return [n for n in plan.neighbours if n.ns == ns and (n.address in ips or n.dev in moved)]

    def batch(ns: str) -> tuple[str, ...]:
        return (
            *(iproute.neighbour_line(n) for n in neighbours(new, ns)),
            *(iproute.route_line(r, "replace") for r in routes(new, ns)),
        )

    ports = {p: b.name for b in new.bridges if b.ns == dest.ns for p in b.ports}
    attach = [line for link in links for line in iproute.link_up_lines(link, ports.get(link))]
    attach += [
        iproute.address_line(a, "replace")
        for a in new.addresses
        if a.ns == dest.ns and a.dev in moved
    ]
    attach += batch(dest.ns)
    sysctls = tuple(
        f"{s.key}={s.value}"
        for s in new.sysctls
        if s.ns == dest.ns and any(f"/conf/{link}/" in s.key for link in links)
    )

    remove: dict[str, tuple[str, ...]] = {}
    for ns in [dest.ns, *others]:
        new_routes = {_route_key(r) for r in routes(new, ns)}
        new_neighbours = {_neighbour_key(n) for n in neighbours(new, ns)}
        gone = [
            iproute.route_line(r, "del")
            for r in routes(old, ns)
            if _route_key(r) not in new_routes and r.dev not in moved
        ]
        gone += [
            f"neigh del {n.address} dev {n.dev}"
            for n in neighbours(old, ns)
            if _neighbour_key(n) not in new_neighbours and n.dev not in moved
        ]
        if gone:
            remove[ns] = tuple(gone)

    fdb: dict[str, tuple[str, ...]] = {}
    macs = [iface.mac.lower() for iface in vm_new.interfaces]
    for x in new.vxlans:
        lines = [f"fdb del {mac} dev {x.name} self" for mac in macs]
        if any(b.ns == x.ns and VXLAN in b.ports for b in new.bridges):
            lines += [f"fdb del {mac} dev {x.name} master" for mac in macs]
        fdb[x.ns] = tuple(lines)

    return Switchover(
        vm=key,
        source=source.name,
        dest=dest.name,
        source_ns=source.ns,
        dest_ns=dest.ns,
        links=links,
        sysctls=sysctls,
        attach=tuple(attach),
        reroute={ns: batch(ns) for ns in others if batch(ns)},
        remove=remove,
        fdb=fdb,
        vm_ns=vm_new.ns,
        resolve=tuple(
            f"neigh flush dev {iface.name} nud {state}"
            for iface in vm_new.interfaces
            for state in ("incomplete", "failed")
            if new.mode == "bridge"
        ),
    )
