"""The compiled programs and the evaluator against a naive reading of docs/policy.md.

`Oracle` is an independent, deliberately plain implementation of the policy meaning that
works straight from the RAW documents (dicts as a user writes them): its own reference
resolution, group membership, service matching and rule order. It shares nothing with
`hyperwall.policy.catalog` or `hyperwall.compiler` but the selector parser, used only to
match one workload's labels. The property test draws random fleets and first packets
(`tests/fleetgen.py`) and checks that `hyperwall.analysis.trace.trace` gives the oracle's
verdict and deciding rule at each end; example tests pin the subtle points.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperwall.analysis.trace import trace
from hyperwall.policy.model import Catalog
from hyperwall.policy.selector import parse_selector
from tests.fleetgen import Doc, Probe, Scope, doc, fleets, load, probes

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
TIER_RANK = {"emergency": 0, "infrastructure": 1, "environment": 2, "application": 3}
ICMP_NAMES = {"icmp": {"echo-request": 8, "echo-reply": 0}, "icmpv6": {"echo-request": 128}}

# An end's outcome as (verdict, rule id); None for an end that is not a workload.
End = tuple[str, str] | None
# A rule that matches a packet: (its place in evaluation order, action, rule id).
Matched = tuple[tuple[Any, ...], str, str]


@dataclass(frozen=True)
class OWorkload:
    key: str
    name: str
    tenant: Scope
    labels: dict[str, str]  # with the pseudo-labels
    ips: tuple[IPAddress, ...]


def key_of(tenant: Scope, name: str) -> str:
    return f"{tenant}/{name}" if tenant else name


def resolve(owner: Scope, text: str) -> str:
    """The key a reference written in a document of `owner` stands for."""
    return text if "/" in text else key_of(owner, text)


def port_matches(spec: str, proto: str, port: int) -> bool:
    """Whether a port spec (`tcp/80`, `tcp/1-9`, `udp`, `icmp/echo-request`, `any`) matches."""
    if spec == "any":
        return True
    name, _, rest = spec.partition("/")
    if name != proto:
        return False
    if not rest:
        return True
    if name in ICMP_NAMES:
        return ICMP_NAMES[name].get(rest, int(rest) if rest.isdigit() else -1) == port
    low, _, high = rest.partition("-")
    return int(low) <= port <= int(high or low)


class Oracle:
    """docs/policy.md's meaning, read directly off raw documents; see the module docstring."""

    def __init__(self, docs: Sequence[Doc]) -> None:
        self.default: dict[str, str] = {}
        self.workloads: dict[str, OWorkload] = {}
        self.groups: dict[str, tuple[Scope, Doc]] = {}
        self.services: dict[str, list[str]] = {}
        self.policies: list[tuple[Scope, str, Doc]] = []
        for d in docs:
            meta, spec = d["metadata"], d.get("spec", {})
            tenant, name = meta.get("tenant"), meta["name"]
            if d["kind"] == "Tenant":
                self.default[name] = spec.get("defaultAction", "drop")
            elif d["kind"] == "Workload":
                labels = dict(meta.get("labels", {}))
                labels["hyperwall.io/name"] = name
                labels["hyperwall.io/host"] = spec["host"]
                if tenant:
                    labels["hyperwall.io/tenant"] = tenant
                ips = tuple(
                    ipaddress.ip_address(ip) for i in spec["interfaces"] for ip in i.get("ips", [])
                )
                key = key_of(tenant, name)
                self.workloads[key] = OWorkload(key, name, tenant, labels, ips)
            elif d["kind"] == "Group":
                self.groups[key_of(tenant, name)] = (tenant, spec)
            elif d["kind"] == "Service":
                self.services[key_of(tenant, name)] = list(spec["ports"])
            elif d["kind"] == "Policy":
                self.policies.append((tenant, name, spec))

    # -- sets of workloads and addresses ------------------------------------------------

    def in_scope(self, scope: Scope) -> Iterator[OWorkload]:
        return (w for w in self.workloads.values() if scope is None or w.tenant == scope)

    def selected(self, scope: Scope, text: str) -> set[str]:
        selector = parse_selector(text)
        return {w.key for w in self.in_scope(scope) if selector.matches(w.labels)}

    def group(self, key: str) -> tuple[set[str], list[str]]:
        """Workload keys and CIDRs of a group: the union of all its parts."""
        owner, spec = self.groups[key]
        members: set[str] = set()
        cidrs = list(spec.get("cidrs", []))
        if "selector" in spec:
            members |= self.selected(owner, spec["selector"])
        members |= {resolve(owner, m) for m in spec.get("members", [])}
        for child in spec.get("groups", []):
            more, nets = self.group(resolve(owner, child))
            members |= more
            cidrs += nets
        return members, cidrs

    def peer(self, owner: Scope, peer: dict[str, str]) -> tuple[set[str], list[str]]:
        if "group" in peer:
            return self.group(resolve(owner, peer["group"]))
        if "workload" in peer:
            return {resolve(owner, peer["workload"])}, []
        if "selector" in peer:
            return self.selected(owner, peer["selector"]), []
        return set(), [peer["cidr"]]

    def address_in(self, owner: Scope, peers: list[dict[str, str]], address: IPAddress) -> bool:
        if not peers:
            return True
        for p in peers:
            members, cidrs = self.peer(owner, p)
            if any(address in self.workloads[m].ips for m in members if m in self.workloads):
                return True
            if any(address in ipaddress.ip_network(c) for c in cidrs):
                return True
        return False

    # -- decisions ----------------------------------------------------------------------

    def applies(self, owner: Scope, spec: Doc, w: OWorkload) -> bool:
        if owner is not None and w.tenant != owner:
            return False
        target = spec.get("appliedTo")
        if target is None:
            return True
        members, _ = self.peer(owner, target)
        return w.key in members

    def services_match(self, owner: Scope, refs: list[str] | None, proto: str, port: int) -> bool:
        if not refs:
            return True
        specs: list[str] = []
        for r in refs:
            if "/" in r or r in ("any", "tcp", "udp", "icmp", "icmpv6"):
                specs.append(r)
            elif owner is not None and key_of(owner, r) in self.services:
                specs += self.services[key_of(owner, r)]
            else:
                specs += self.services[r]
        return any(port_matches(s, proto, port) for s in specs)

    def decide(self, w: OWorkload, direction: str, p: Probe) -> tuple[str, str]:
        """(verdict, rule id) at workload `w`, direction `in` or `out`, for packet `p`."""
        return self.first_match(w, self.matching(w, direction, p))

    def matching(self, w: OWorkload, direction: str, p: Probe) -> list[Matched]:
        """Every rule that matches `p` at workload `w` in `direction`, in evaluation order."""
        src, dst = ipaddress.ip_address(p.src), ipaddress.ip_address(p.dst)
        ordered: list[Matched] = []
        for owner, name, spec in self.policies:
            if not self.applies(owner, spec, w):
                continue
            tier = TIER_RANK[spec.get("tier", "application")]
            order = (tier, spec.get("priority", 1000), name, owner is not None)
            for position, rule in enumerate(spec.get("rules", [])):
                if rule.get("direction", "both") not in (direction, "both"):
                    continue
                matches = (
                    self.address_in(owner, rule.get("from", []), src)
                    and self.address_in(owner, rule.get("to", []), dst)
                    and self.services_match(owner, rule.get("services"), p.proto, p.port)
                )
                if matches:
                    rule_id = f"{key_of(owner, name)}/{rule['name']}"
                    ordered.append(((*order, position), rule["action"], rule_id))
        return sorted(ordered)

    def first_match(self, w: OWorkload, ordered: Sequence[Matched]) -> tuple[str, str]:
        """(verdict, rule id) of the matching rules `ordered` at workload `w`: the first
        one that is not a `pass` decides, a `pass` skips the rest of its tier."""
        skipped_tier = -1
        for order, action, rule_id in ordered:
            if order[0] == skipped_tier:
                continue
            if action == "pass":
                skipped_tier = order[0]
                continue
            return action, rule_id
        return (self.default[w.tenant] if w.tenant else "drop"), "default"

    def owner(self, address: str) -> OWorkload | None:
        ip = ipaddress.ip_address(address)
        return next((w for w in self.workloads.values() if ip in w.ips), None)

    def check(self, p: Probe) -> tuple[str, End, End]:
        """Overall verdict, egress end and ingress end, as `hyperwall trace` reports them."""
        source, target = self.owner(p.src), self.owner(p.dst)
        egress = self.decide(source, "out", p) if source else None
        ingress = self.decide(target, "in", p) if target else None
        verdict = next((e[0] for e in (egress, ingress) if e and e[0] != "allow"), "allow")
        return verdict, egress, ingress


def traced(catalog: Catalog, p: Probe) -> tuple[str, End, End]:
    """What `hyperwall trace --from SRC --to DST --service PROTO/PORT` reports."""
    result = trace(catalog, p.src, p.dst, p.service)
    ends = [None if d is None else (d.verdict, d.rule) for d in (result.egress, result.ingress)]
    return result.verdict, ends[0], ends[1]


# -- the property ----------------------------------------------------------------------


@pytest.mark.slow
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), docs=fleets())
def test_trace_agrees_with_oracle(data: st.DataObject, docs: list[Doc]) -> None:
    catalog = load(docs)
    oracle = Oracle(docs)
    for p in data.draw(st.lists(probes(docs), min_size=20, max_size=30), label="probes"):
        assert traced(catalog, p) == oracle.check(p), p


# -- examples --------------------------------------------------------------------------


def tenant(name: str, default: str = "drop") -> Doc:
    return doc("Tenant", name, spec={"defaultAction": default})


def vm(name: str, scope: Scope, ips: list[str], host: str = "hv1", **labels: str) -> Doc:
    mac = f"52:54:00:00:00:{int(ipaddress.ip_address(ips[0])) % 256:02x}"
    spec = {"host": host, "interfaces": [{"name": "eth0", "mac": mac, "ips": ips}]}
    return doc("Workload", name, scope, labels=labels, spec=spec)


def policy(name: str, scope: Scope, rules: list[Doc], **spec: Any) -> Doc:
    return doc("Policy", name, scope, spec={**spec, "rules": rules})


def group(name: str, scope: Scope, **spec: Any) -> Doc:
    return doc("Group", name, scope, spec=spec)


BASE = [
    tenant("acme"),
    tenant("globex", "allow"),
    vm("web", "acme", ["10.0.0.1", "fd00::1"], role="web"),
    vm("db", "acme", ["10.0.0.2", "fd00::2"], "hv2", role="db"),
    vm("other", "globex", ["10.0.0.3"], role="web"),
    vm("dns", None, ["10.0.0.53"], role="dns"),
]


def both(docs: Sequence[Doc], src: str, dst: str, service: str) -> tuple[str, End, End]:
    """The trace result, after checking that the oracle agrees with it."""
    proto, _, port = service.partition("/")
    probe = Probe(src, dst, proto, int(port))
    got = traced(load(docs), probe)
    assert got == Oracle(docs).check(probe)
    return got


def test_pass_skips_only_the_rest_of_its_tier() -> None:
    docs = [
        *BASE,
        policy(
            "guard",
            "acme",
            [
                {"name": "skip", "action": "pass", "from": [{"cidr": "10.0.0.1/32"}]},
                {"name": "deny", "action": "drop"},
            ],
            tier="environment",
        ),
        policy("later", "acme", [{"name": "same-tier", "action": "reject"}], tier="environment"),
        policy("app", "acme", [{"name": "ok", "action": "allow", "services": ["tcp/5432"]}]),
    ]
    # web's packet passes `guard`, so `later` (same tier) is skipped; `app` allows it
    assert both(docs, "10.0.0.1", "10.0.0.2", "tcp/5432") == (
        "allow",
        ("allow", "acme/app/ok"),
        ("allow", "acme/app/ok"),
    )
    # from outside: `guard` drops at db
    assert both(docs, "192.0.2.1", "10.0.0.2", "tcp/5432")[2] == ("drop", "acme/guard/deny")
    # a pass with nothing after it falls through to the default
    assert both(docs, "10.0.0.1", "10.0.0.2", "tcp/80") == (
        "drop",
        ("drop", "default"),
        ("drop", "default"),
    )


def test_tier_before_priority_before_name() -> None:
    docs = [
        *BASE,
        policy("a-app", "acme", [{"name": "r", "action": "allow"}], priority=1),
        policy("z-emergency", "acme", [{"name": "r", "action": "reject"}], tier="emergency"),
        policy("b-infra", "acme", [{"name": "r", "action": "allow"}], tier="infrastructure"),
    ]
    assert both(docs, "10.0.0.1", "192.0.2.1", "udp/53")[1] == ("reject", "acme/z-emergency/r")
    docs = [
        *BASE,
        policy("b", "acme", [{"name": "r", "action": "drop"}], priority=10),
        policy("a", "acme", [{"name": "r", "action": "allow"}], priority=20),
        policy("c", "acme", [{"name": "r", "action": "reject"}], priority=10),
    ]
    assert both(docs, "10.0.0.1", "192.0.2.1", "udp/53")[1] == ("drop", "acme/b/r")


def test_rule_position_not_rule_name_orders_rules() -> None:
    docs = [
        *BASE,
        policy(
            "p", "acme", [{"name": "zz", "action": "reject"}, {"name": "aa", "action": "allow"}]
        ),
    ]
    assert both(docs, "10.0.0.1", "192.0.2.1", "tcp/80")[1] == ("reject", "acme/p/zz")


def test_same_policy_name_provider_before_tenant() -> None:
    docs = [
        *BASE,
        policy("shared", "acme", [{"name": "t", "action": "allow"}]),
        policy("shared", None, [{"name": "p", "action": "drop"}]),
    ]
    assert both(docs, "10.0.0.1", "192.0.2.1", "tcp/80") == (
        "drop",
        ("drop", "shared/p"),
        None,
    )
    # a lower priority number still wins over the provider's same-named policy
    docs[-2]["spec"]["priority"] = 999
    assert both(docs, "10.0.0.1", "192.0.2.1", "tcp/80")[1] == ("allow", "acme/shared/t")


def test_nested_groups_and_members() -> None:
    docs = [
        *BASE,
        group("dbs", "acme", selector='role == "db"'),
        group("webs", "acme", members=["web"]),
        group("all", "acme", groups=["dbs", "webs"]),
        group("acme-all", None, groups=["acme/all"]),
        policy("p", "acme", [{"name": "in", "action": "allow", "from": [{"group": "all"}]}]),
        policy(
            "infra",
            None,
            [{"name": "r", "action": "reject", "to": [{"group": "acme-all"}]}],
            appliedTo={"workload": "dns"},
        ),
    ]
    assert both(docs, "fd00::1", "fd00::2", "tcp/80")[2] == ("allow", "acme/p/in")
    assert both(docs, "10.0.0.2", "10.0.0.1", "tcp/80")[2] == ("allow", "acme/p/in")
    assert both(docs, "10.0.0.53", "10.0.0.1", "tcp/80")[1] == ("reject", "infra/r")
    # globex's web is not in acme's group although its role matches
    assert both(docs, "10.0.0.3", "10.0.0.1", "tcp/80") == (
        "drop",
        ("allow", "default"),
        ("drop", "default"),
    )


def test_cidr_peers_match_workload_and_external_addresses() -> None:
    v6 = {"name": "v6", "action": "reject", "direction": "in", "from": [{"cidr": "fd00::/124"}]}
    v4 = {"name": "v4", "action": "allow", "direction": "in", "from": [{"cidr": "10.0.0.0/30"}]}
    docs = [*BASE, policy("p", "acme", [v6, v4])]
    assert both(docs, "10.0.0.1", "10.0.0.2", "tcp/80")[2] == ("allow", "acme/p/v4")
    assert both(docs, "10.0.0.3", "10.0.0.2", "tcp/80")[2] == ("allow", "acme/p/v4")
    assert both(docs, "10.0.0.4", "10.0.0.2", "tcp/80")[2] == ("drop", "default")
    assert both(docs, "fd00::1", "fd00::2", "tcp/80")[2] == ("reject", "acme/p/v6")
    assert both(docs, "fd00::10", "fd00::2", "tcp/80")[2] == ("drop", "default")


def test_icmp_matches_only_its_own_family() -> None:
    docs = [
        *BASE,
        policy("p", "acme", [{"name": "ping", "action": "allow", "services": ["icmp"]}]),
    ]
    assert both(docs, "10.0.0.1", "10.0.0.2", "icmp/8")[0] == "allow"
    assert both(docs, "fd00::1", "fd00::2", "icmpv6/128")[0] == "drop"


def test_tenant_isolation() -> None:
    docs = [
        *BASE,
        group("everyone", "acme", selector="all()"),
        policy(
            "wide",
            "acme",
            [{"name": "r", "action": "reject", "from": [{"selector": "all()"}]}],
            appliedTo={"selector": 'role == "web"'},
        ),
        policy("mine", "acme", [{"name": "r", "action": "drop", "from": [{"group": "everyone"}]}]),
    ]
    # acme's policies are not installed on globex's "other" (whose default is allow), and
    # acme's selectors and groups do not pick globex's or the provider's workloads
    assert both(docs, "10.0.0.3", "10.0.0.53", "tcp/80") == (
        "drop",
        ("allow", "default"),
        ("drop", "default"),
    )
    assert both(docs, "10.0.0.53", "10.0.0.1", "tcp/80")[2] == ("drop", "default")
    assert both(docs, "10.0.0.3", "10.0.0.1", "tcp/80")[2] == ("drop", "default")
    assert both(docs, "10.0.0.2", "10.0.0.1", "tcp/80")[2] == ("drop", "acme/mine/r")
    docs[-1]["metadata"]["name"] = "zzz"
    assert both(docs, "10.0.0.2", "10.0.0.1", "tcp/80")[2] == ("reject", "acme/wide/r")
    assert both(docs, "10.0.0.3", "10.0.0.2", "tcp/80")[2] == ("drop", "default")


def test_provider_selector_spans_tenants_and_pseudo_labels() -> None:
    docs = [
        *BASE,
        policy(
            "q",
            None,
            [{"name": "r", "action": "reject", "direction": "in"}],
            tier="emergency",
            appliedTo={"selector": 'role == "web" && hyperwall.io/host == "hv1"'},
        ),
    ]
    assert both(docs, "10.0.0.2", "10.0.0.1", "tcp/80")[2] == ("reject", "q/r")
    assert both(docs, "10.0.0.2", "10.0.0.3", "tcp/80")[2] == ("reject", "q/r")
    assert both(docs, "10.0.0.1", "10.0.0.2", "tcp/80")[2] == ("drop", "default")


@pytest.mark.parametrize("service", ["tcp/80", "udp/53", "icmp/8"])
def test_external_to_external_imposes_nothing(service: str) -> None:
    assert both(BASE, "192.0.2.1", "198.51.100.7", service) == ("allow", None, None)
