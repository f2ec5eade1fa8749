"""The data-plane benchmark's policy: N per-port allow rules, as documents and as rivals.

Counterpart of `benchmarks.dataplane` (which measures) and `benchmarks.dataplane_topology`
(the namespaces the programs are loaded into). Pure: builds raw documents, validates them
with `build_catalog`, and renders the same rules for the rival cases: a linear
iptables-restore chain (case c) and a firewall appliance's nftables set (case d).

The fleet (tenant `bench`, default drop):

- `client` (host hv-a, 10.0.0.1), `server-a` (hv-a, 10.0.0.2), `server-b` (hv-b, 10.0.0.3);
  the two servers' addresses are adjacent, so the `servers` group is one interval.
- phantom source workloads on hv-c: `src-NN` (10.1.x.y), the only member of group `src-NN`,
  one per rules policy but the last; `partner` (10.2.0.1), member of group `partners`; and
  the `roamer` (10.9.0.9) whose label moves it in and out of group `partners`.
- policy `client-out`: the client may open anything (one rule, egress).
- policies `svc-NN` (priority 100 + NN, applied to `servers`): rules
  `allow from group src-NN to group servers on tcp/(10000 + i)`, at most `PER_POLICY` rules
  each, distinct ports within a policy, so the compiler folds each policy into one block.
  Group `src-NN` selects `zone == "zNN"`; the client is in the last policy's zone. The first
  `MOVER_RULES` rules of the first policy come from group `partners` instead, so a label
  change of the roamer changes a bounded number of rules whatever the rule count.
- the very last rule of the last policy admits the benchmark's ports (tcp/5201-5203): every
  other rule must be evaluated (linear) or looked up (sets) first.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hyperwall.policy.catalog import build_catalog
from hyperwall.policy.errors import Source
from hyperwall.policy.model import Catalog, PolicyConfig, Workload
from hyperwall.policy.ports import parse_port_spec

TENANT = "bench"
PER_POLICY = 10_000
TEST_PORTS = (5201, 5203)  # iperf3, connection rate, request/response
IPERF_PORT, CRR_PORT, RR_PORT = 5201, 5202, 5203
DENIED_PORT = 5299  # no rule admits it: a firewall must drop it
FIRST_PORT = 10_000
ROAMER_IP = "10.9.0.9"
PARTNER_IP = "10.2.0.1"
MOVER_RULES = 10  # rules from group `partners` (the first of policy 0)


@dataclass(frozen=True, slots=True)
class Vm:
    name: str
    host: str  # the compiler's host name
    mac: str
    ip: str
    zone: str = ""

    @property
    def ifname(self) -> str:
        """The host-side interface name: hwb-v + the MAC's last five bytes in hex."""
        return vm_ifname(self.mac)


def vm_ifname(mac: str) -> str:
    return "hwb-v" + mac.replace(":", "")[2:]


HOST_A, HOST_B, HOST_C = "hv-a", "hv-b", "hv-c"
CLIENT = Vm("client", HOST_A, "52:54:00:00:00:01", "10.0.0.1")
SERVER_A = Vm("server-a", HOST_A, "52:54:00:00:00:02", "10.0.0.2")
SERVER_B = Vm("server-b", HOST_B, "52:54:00:00:00:03", "10.0.0.3")
VMS = (CLIENT, SERVER_A, SERVER_B)
SERVERS_CIDR = "10.0.0.2/31"  # server-a and server-b


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule as the rivals see it: source address, tcp port range (low, high)."""

    policy: int
    index: int
    source: str  # an address (the group's only member)
    ports: tuple[int, int]

    @property
    def group(self) -> str:
        return "partners" if self.source == PARTNER_IP else f"src-{self.policy:02d}"


def policy_sizes(rules: int, per_policy: int = PER_POLICY) -> list[int]:
    """Rules per policy: full policies of `per_policy`, the remainder in the last."""
    if rules < 1:
        raise ValueError("at least one rule")
    sizes = [per_policy] * (rules // per_policy)
    if rules % per_policy:
        sizes.append(rules % per_policy)
    return sizes


def source_ip(policy: int, policies: int) -> str:
    """The address of the only member of group src-NN (the client for the last policy)."""
    return CLIENT.ip if policy == policies - 1 else f"10.1.{policy // 250}.{policy % 250 + 1}"


def rules_of(rules: int, per_policy: int = PER_POLICY) -> Iterator[Rule]:
    """Every rule in evaluation order; the last one admits the test ports."""
    sizes = policy_sizes(rules, per_policy)
    for p, size in enumerate(sizes):
        for i in range(size):
            last = p == len(sizes) - 1 and i == size - 1
            port = TEST_PORTS if last else (FIRST_PORT + i, FIRST_PORT + i)
            partner = p == 0 and i < MOVER_RULES and not last
            yield Rule(p, i, PARTNER_IP if partner else source_ip(p, len(sizes)), port)


def _port_text(ports: tuple[int, int]) -> str:
    low, high = ports
    return f"tcp/{low}" if low == high else f"tcp/{low}-{high}"


def _meta(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "tenant": TENANT}
    if labels is not None:
        meta["labels"] = labels
    return meta


def _doc(kind: str, metadata: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "hyperwall.io/v1", "kind": kind, "metadata": metadata, "spec": spec}


def _workload(name: str, host: str, mac: str, ip: str, labels: dict[str, str]) -> dict[str, Any]:
    spec = {"host": host, "interfaces": [{"name": "eth0", "mac": mac, "ips": [ip]}]}
    return _doc("Workload", _meta(name, labels), spec)


def zone(policy: int) -> str:
    return f"z{policy:02d}"


def documents(rules: int, per_policy: int = PER_POLICY) -> list[dict[str, Any]]:
    """The fleet's raw documents (as a YAML loader would produce them)."""
    sizes = policy_sizes(rules, per_policy)
    last = len(sizes) - 1
    docs = [_doc("Tenant", {"name": TENANT}, {"defaultAction": "drop"})]
    docs.append(
        _workload(
            CLIENT.name, CLIENT.host, CLIENT.mac, CLIENT.ip, {"role": "client", "zone": zone(last)}
        )
    )
    for vm in (SERVER_A, SERVER_B):
        docs.append(_workload(vm.name, vm.host, vm.mac, vm.ip, {"role": "server"}))
    for p in range(last):
        mac = f"52:54:00:01:{p // 256:02x}:{p % 256:02x}"
        docs.append(
            _workload(f"src-{p:02d}", HOST_C, mac, source_ip(p, len(sizes)), {"zone": zone(p)})
        )
    docs.append(_workload("partner", HOST_C, "52:54:00:02:00:01", PARTNER_IP, {"zone": "partner"}))
    docs.append(_workload("roamer", HOST_C, "52:54:00:09:00:09", ROAMER_IP, {"zone": "none"}))
    docs.append(_doc("Group", _meta("servers"), {"selector": 'role == "server"'}))
    docs.append(_doc("Group", _meta("partners"), {"selector": 'zone == "partner"'}))
    docs.append(_doc("Group", _meta("clients"), {"selector": 'role == "client"'}))
    for p in range(len(sizes)):
        docs.append(_doc("Group", _meta(f"src-{p:02d}"), {"selector": f'zone == "{zone(p)}"'}))
    docs.append(
        _doc(
            "Policy",
            _meta("client-out"),
            {
                "tier": "application",
                "priority": 10,
                "appliedTo": {"group": "clients"},
                "rules": [{"name": "any-out", "action": "allow", "direction": "out"}],
            },
        )
    )
    by_policy: dict[int, list[dict[str, Any]]] = {p: [] for p in range(len(sizes))}
    for r in rules_of(rules, per_policy):
        by_policy[r.policy].append(
            {
                "name": f"r{r.index:05d}",
                "action": "allow",
                "direction": "in",
                "from": [{"group": r.group}],
                "to": [{"group": "servers"}],
                "services": [_port_text(r.ports)],
            }
        )
    for p, items in by_policy.items():
        docs.append(
            _doc(
                "Policy",
                _meta(f"svc-{p:02d}"),
                {
                    "tier": "application",
                    "priority": 100 + p,
                    "appliedTo": {"group": "servers"},
                    "rules": items,
                },
            )
        )
    return docs


def catalog(rules: int, per_policy: int = PER_POLICY) -> Catalog:
    docs = documents(rules, per_policy)
    return build_catalog((doc, Source("dataplane-bench.yaml", i + 1)) for i, doc in enumerate(docs))


# -- changes ---------------------------------------------------------------------------


def roamer_moved(cat: Catalog, inside: bool) -> Workload:
    """The roamer with its zone label set into (or out of) group `partners`."""
    w = cat.workloads[f"{TENANT}/roamer"]
    return dataclasses.replace(w, labels={**w.labels, "zone": "partner" if inside else "none"})


def rule_edited(config: PolicyConfig, policy: int, index: int, port: int) -> PolicyConfig:
    """`config` with rule `index` of policy svc-`policy` on tcp/`port` (all else shared)."""
    key = f"{TENANT}/svc-{policy:02d}"
    p = config.policies[key]
    rule = dataclasses.replace(p.rules[index], services=(parse_port_spec(f"tcp/{port}"),))
    rules = (*p.rules[:index], rule, *p.rules[index + 1 :])
    policies = {**config.policies, key: dataclasses.replace(p, rules=rules)}
    return dataclasses.replace(config, policies=policies)


# -- the rivals ------------------------------------------------------------------------


def iptables_restore(rules: int, vm_prefix: str = "hwb-v", per_policy: int = PER_POLICY) -> str:
    """Case c: the same rules as one linear FORWARD chain (iptables-restore input).

    Conntrack first; traffic not going to a local VM passes (the egress side: hyperwall's
    client-out admits anything); then one rule per policy rule in evaluation order,
    `-s SRC -d SERVERS -p tcp --dport P -j ACCEPT`; the chain's policy drops the rest.
    """
    lines = [
        "*filter",
        ":INPUT ACCEPT [0:0]",
        ":FORWARD DROP [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        "-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
        f"-A FORWARD ! -o {vm_prefix}+ -j ACCEPT",
    ]
    for r in rules_of(rules, per_policy):
        low, high = r.ports
        port = str(low) if low == high else f"{low}:{high}"
        lines.append(
            f"-A FORWARD -s {r.source}/32 -d {SERVERS_CIDR} -p tcp -m tcp --dport {port} -j ACCEPT"
        )
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


APPLIANCE_TABLE = "hwb_appliance"


def appliance_ruleset(rules: int, per_policy: int = PER_POLICY) -> str:
    """Case d: the firewall appliance's table (nft -f input), the rules as set elements.

    One concatenated interval set `saddr . daddr . l4proto . dport` holds every rule, as
    hyperwall's folded blocks do, so the appliance pays the same lookup and the difference
    from case b is the hairpin path.
    """
    net = ipaddress.ip_network(SERVERS_CIDR)
    dst = f"{net.network_address}-{net.broadcast_address}"
    elements = []
    for r in rules_of(rules, per_policy):
        low, high = r.ports
        port = str(low) if low == high else f"{low}-{high}"
        elements.append(f"{r.source} . {dst} . tcp . {port}")
    body = ",\n    ".join(elements)
    return (
        f"table inet {APPLIANCE_TABLE} {{\n"
        "  set rules {\n"
        "    type ipv4_addr . ipv4_addr . inet_proto . inet_service\n"
        "    flags interval\n"
        f"    elements = {{\n    {body}\n    }}\n"
        "  }\n"
        "  chain forward {\n"
        "    type filter hook forward priority 0; policy drop;\n"
        "    ct state established,related accept\n"
        "    ct state invalid drop\n"
        "    ip saddr . ip daddr . meta l4proto . th dport @rules accept\n"
        "  }\n"
        "}\n"
    )


CONNTRACK_ONLY_TABLE = "hwb_conntrack"


def conntrack_only_ruleset() -> str:
    """Case a1: the floor of a stateful firewall: conntrack, everything accepted."""
    return (
        f"table inet {CONNTRACK_ONLY_TABLE} {{\n"
        "  chain forward {\n"
        "    type filter hook forward priority 0; policy accept;\n"
        "    ct state established,related accept\n"
        "    accept\n"
        "  }\n"
        "}\n"
    )
