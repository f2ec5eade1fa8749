"""Renders a `LabPlan` into iproute2 batch lines, sysctl assignments and nft rulesets. Pure.

Counterpart of `lab.topology` (what to build) and `lab.netns` (which runs these). Order of
construction: namespaces (`netns_lines`), every veth pair with both ends created directly in
their namespaces by one root batch (`veth_lines`: no lab link ever exists in the root
namespace), then per namespace in parallel its sysctls and nft table and its batch
(`namespace_lines`: links up, addresses, neighbours, routes; `rule_lines`: rules).
"""

from __future__ import annotations

from hyperwall.lab.topology import (
    RESPONDER_PORT,
    Address,
    LabPlan,
    Neighbour,
    Route,
    Rule,
)


def netns_lines(plan: LabPlan) -> list[str]:
    return [f"netns add {ns.name}" for ns in plan.namespaces]


def veth_lines(plan: LabPlan) -> list[str]:
    """`ip -batch` lines run in the root namespace; each pair is born in its namespaces."""
    return [
        f"link add {v.name} netns {v.ns} address {v.mac} type veth"
        f" peer name {v.peer_name} netns {v.peer_ns} address {v.peer_mac}"
        for v in plan.veths
    ]


def _address(a: Address) -> str:
    line = f"address add {a.cidr} dev {a.dev}"
    return line + " nodad" if ":" in a.cidr else line


def _neighbour(n: Neighbour) -> str:
    return f"neigh replace {n.address} lladdr {n.mac} dev {n.dev} nud permanent"


def _route(r: Route) -> str:
    parts = ["route add"]
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


def namespace_lines(plan: LabPlan, ns: str) -> list[str]:
    """`ip -n NS -batch` lines configuring namespace `ns` once its links exist."""
    lines = ["link set lo up"]
    ports: dict[str, str] = {}
    for b in plan.bridges:
        if b.ns == ns:
            lines += [
                f"link add {b.name} type bridge stp_state 0 mcast_snooping 0",
                f"link set {b.name} addrgenmode none",
                f"link set {b.name} up",
            ]
            ports.update((p, b.name) for p in b.ports)
    for link in plan.links_in(ns):
        if link in (b.name for b in plan.bridges if b.ns == ns):
            continue
        lines.append(f"link set {link} addrgenmode none")
        if link in ports:
            lines.append(f"link set {link} master {ports[link]}")
        lines.append(f"link set {link} up")
    lines += [_address(a) for a in plan.addresses if a.ns == ns]
    lines += [_neighbour(n) for n in plan.neighbours if n.ns == ns]
    lines += [_route(r) for r in plan.routes if r.ns == ns]
    return lines


def rule_lines(plan: LabPlan, ns: str, family: int) -> list[str]:
    """`ip -4|-6 -n NS -batch` lines for the policy-routing rules of one family.

    Separate because `ip rule` without -6 switches a batch to IPv4 for good; rules need no
    link, so they can go in with the sysctls.
    """
    return [_rule(r) for r in plan.rules if r.ns == ns and (":" in r.src) == (family == 6)]


def sysctl_assignments(plan: LabPlan, ns: str) -> list[str]:
    """`sysctl -w` arguments for namespace `ns` ('/'-separated keys: names may hold dots)."""
    return [f"{s.key}={s.value}" for s in plan.sysctls if s.ns == ns]


def redirect_ruleset(port: int = RESPONDER_PORT) -> str:
    """The nft table of a VM (and the external) namespace: every TCP/UDP port to `port`.

    Only new connections are NATed, so the namespace's own outgoing probes are untouched.
    """
    return (
        "table inet hwlab {\n"
        "  chain prerouting {\n"
        "    type nat hook prerouting priority dstnat; policy accept;\n"
        f"    meta l4proto {{ tcp, udp }} th dport != {port} redirect to :{port}\n"
        "  }\n"
        "}\n"
    )
