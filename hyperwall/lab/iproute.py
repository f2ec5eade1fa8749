"""Renders a `LabPlan` into iproute2 batch lines, sysctl assignments and nft rulesets. Pure.

Counterpart of `lab.topology` (what to build) and `lab.nsexec` (which runs these). Order of
construction: namespaces (`netns_lines`), every veth pair with both ends created directly in
their namespaces by one root batch (`veth_lines`: no lab link ever exists in the root
namespace), then per namespace in parallel its sysctls and nft table and its batch
(`namespace_lines`: links up, VXLAN devices, addresses, neighbours, routes; `rule_lines`:
rules). Bridge mode adds a `bridge -batch` per VXLAN member once its device exists
(`flood_lines`: the FDB flood entries to the other members).
"""

from __future__ import annotations

from hyperwall.lab.topology import (
    RESPONDER_PORT,
    UPLINK,
    Address,
    LabPlan,
    Neighbour,
    Route,
    Rule,
    Vxlan,
)


def netns_lines(plan: LabPlan) -> list[str]:
    return [f"netns add {ns.name}" for ns in plan.namespaces]


def veth_lines(plan: LabPlan) -> list[str]:
    """`ip -batch` lines run in the root namespace; each pair is born in its namespaces."""
    lines = []
    for v in plan.veths:
        mtu = f" mtu {v.mtu}" if v.mtu is not None else ""
        lines.append(
            f"link add {v.name} netns {v.ns} address {v.mac}{mtu} type veth"
            f" peer name {v.peer_name} netns {v.peer_ns} address {v.peer_mac}{mtu}"
        )
    return lines


def _vxlan(x: Vxlan) -> str:
    return (
        f"link add {x.name} address {x.mac} mtu {x.mtu} type vxlan id {x.vni}"
        f" local {x.local} dev {x.dev} dstport {x.port}"
    )


def address_line(a: Address, verb: str = "add") -> str:
    line = f"address {verb} {a.cidr} dev {a.dev}"
    return line + " nodad" if ":" in a.cidr else line


def neighbour_line(n: Neighbour) -> str:
    return f"neigh replace {n.address} lladdr {n.mac} dev {n.dev} nud permanent"


def route_line(r: Route, verb: str = "add") -> str:
    """`route add` (construction), `replace` (a migration: idempotent) or `del`."""
    parts = [f"route {verb}"]
    if r.local:
        parts.append("local")
    parts.append(r.dst)
    if r.via is not None:
        parts.append(f"via {r.via}")
    parts.append(f"dev {r.dev}")
    if r.onlink:
        parts.append("onlink")
    if r.table is not None:
        parts.append(f"table {r.table}")
    return " ".join(parts)


def _rule(r: Rule) -> str:
    return f"rule add from {r.src} table {r.table} pref {r.priority}"


def link_up_lines(link: str, master: str | None) -> list[str]:
    lines = [f"link set {link} addrgenmode none"]
    if master is not None:
        lines.append(f"link set {link} master {master}")
    return [*lines, f"link set {link} up"]


def namespace_lines(plan: LabPlan, ns: str) -> list[str]:
    """`ip -n NS -batch` lines configuring namespace `ns` once its veth ends exist.

    Bridges first (their ports join them as they come up), then the veth ends, VXLAN devices
    (over the underlay link), addresses, neighbours, routes.
    """
    lines = ["link set lo up"]
    ports: dict[str, str] = {}
    made: set[str] = set()
    for b in plan.bridges:
        if b.ns == ns:
            mac = f" address {b.mac}" if b.mac is not None else ""
            lines.append(f"link add {b.name}{mac} type bridge stp_state 0 mcast_snooping 0")
            lines += link_up_lines(b.name, None)
            ports.update((p, b.name) for p in b.ports)
            made.add(b.name)
    vxlans = [x for x in plan.vxlans if x.ns == ns]
    made |= {x.name for x in vxlans}
    for link in plan.links_in(ns):
        if link not in made:
            lines += link_up_lines(link, ports.get(link))
    for x in vxlans:
        lines.append(_vxlan(x))
        lines += link_up_lines(x.name, ports.get(x.name))
    lines += [address_line(a) for a in plan.addresses if a.ns == ns]
    lines += [neighbour_line(n) for n in plan.neighbours if n.ns == ns]
    lines += [route_line(r) for r in plan.routes if r.ns == ns]
    return lines


def flood_lines(plan: LabPlan, ns: str) -> list[str]:
    """`bridge -n NS -batch` lines: head-end replication of broadcast, unknown unicast and
    multicast to every other member of the VXLAN segment (bridge mode)."""
    return [
        f"fdb append 00:00:00:00:00:00 dev {f.dev} dst {f.dst}" for f in plan.flood if f.ns == ns
    ]


def rule_lines(plan: LabPlan, ns: str, family: int) -> list[str]:
    """`ip -4|-6 -n NS -batch` lines for the policy-routing rules of one family.

    Separate because `ip rule` without -6 switches a batch to IPv4 for good; rules need no
    link, so they can go in with the sysctls.
    """
    return [_rule(r) for r in plan.rules if r.ns == ns and (":" in r.src) == (family == 6)]


def sysctl_assignments(plan: LabPlan, ns: str) -> list[str]:
    """`sysctl -w` arguments for namespace `ns` ('/'-separated keys: names may hold dots)."""
    return [f"{s.key}={s.value}" for s in plan.sysctls if s.ns == ns]


def redirect_ruleset(port: int = RESPONDER_PORT, vxlan_port: int | None = None) -> str:
    """The nft table of a VM (and the external) namespace: every TCP/UDP port to `port`.

    Only new connections are NATed, so the namespace's own outgoing probes are untouched.
    `vxlan_port`: the namespace terminates VXLAN (the external one in bridge mode), whose
    packets arriving from the underlay must reach the VXLAN socket, not the responder.
    """
    keep = ""
    if vxlan_port is not None:
        keep = f'    iifname "{UPLINK}" udp dport {vxlan_port} accept\n'
    return (
        "table inet hwlab {\n"
        "  chain prerouting {\n"
        "    type nat hook prerouting priority dstnat; policy accept;\n"
        f"{keep}"
        f"    meta l4proto {{ tcp, udp }} th dport != {port} redirect to :{port}\n"
        "  }\n"
        "}\n"
    )


def namespace_ruleset(plan: LabPlan, ns: str) -> str:
    """`redirect_ruleset` for namespace `ns` of `plan` (a VM or the external namespace)."""
    vxlan = next((x.port for x in plan.vxlans if x.ns == ns), None)
    return redirect_ruleset(vxlan_port=vxlan)
