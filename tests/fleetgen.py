"""Hypothesis strategies for small random fleets, as the RAW documents a user would write.

`fleets()` draws a list of document dicts (`apiVersion: hyperwall.io/v1`) that is always
valid: 1-2 tenants, 2-7 workloads of tenants and of the provider on hosts hv1/hv2, groups
(selectors, members, CIDRs, nested groups referring only to earlier groups, so no cycles),
Services (provider and tenant ones, names that may collide) and 1-5 policies whose names may
collide between the provider and a tenant. Tenant documents only name their own tenant's
objects, unqualified; provider documents name tenant objects qualified (`acme/web`).

`probes(docs)` draws first packets `(src, dst, proto, port)` between workload addresses and a
few external addresses of the same family; `policy_edits(docs)` and `workload_edits(...)`
draw related fleets for the incremental-compiler tests (`tests/compiler/test_incremental`).
The reference oracle that reads these documents is `tests/test_oracle.py`.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import Any, NamedTuple, TypeVar

from hypothesis import strategies as st

from hyperwall.policy.catalog import build_catalog
from hyperwall.policy.errors import Source
from hyperwall.policy.model import Catalog, Interface, Workload

T = TypeVar("T")
Doc = dict[str, Any]
Scope = str | None  # a tenant name, or None for the provider scope

API = "hyperwall.io/v1"
TENANT_NAMES = ("acme", "globex")
HOSTS = ("hv1", "hv2")
WORKLOAD_NAMES = ("a", "b", "c", "d", "e", "f", "g", "h")
GROUP_NAMES = ("g1", "g2", "g3", "web")
SERVICE_NAMES = ("web", "dns")  # few, so tenant and provider Services share names
POLICY_NAMES = ("p1", "p2", "shared")
RULE_NAMES = ("ra", "rb", "rc", "rd", "re")
TIERS = ("emergency", "infrastructure", "environment", "application")
PRIORITIES = (None, 100, 1000)  # None: the default (1000), so ties happen
ACTIONS = ("allow", "drop", "reject", "pass")

LABEL_VALUES: dict[str, tuple[str, ...]] = {
    "role": ("web", "db", "app"),
    "env": ("prod", "dev"),
    "pci": ("true",),
}

V4_POOL = tuple(str(ipaddress.IPv4Address("10.0.0.0") + i) for i in range(32))
V6_POOL = tuple(str(ipaddress.IPv6Address("fd00::") + i) for i in range(32))
V4_EXTERNAL = ("192.0.2.1", "198.51.100.7")
V6_EXTERNAL = ("2001:db8::1", "2001:db8::7")
CIDRS = (
    "10.0.0.0/30",
    "10.0.0.8/29",
    "10.0.0.16/28",
    "10.0.0.0/27",
    "192.0.2.0/24",
    "0.0.0.0/0",
    "fd00::/124",
    "fd00::10/124",
    "fd00::/120",
    "2001:db8::/64",
)
PORT_SPECS = (
    "tcp/80",
    "tcp/443",
    "tcp/8000-8080",
    "tcp/22",
    "tcp",
    "udp/53",
    "udp",
    "icmp",
    "icmp/echo-request",
    "icmp/0",
    "icmpv6",
    "icmpv6/echo-request",
    "icmpv6/129",
    "any",
)
# What probes ask for: (protocol, port or ICMP type) per address family.
V4_SERVICES = (
    ("tcp", 22),
    ("tcp", 80),
    ("tcp", 443),
    ("tcp", 8000),
    ("tcp", 8080),
    ("tcp", 8081),
    ("tcp", 53),
    ("udp", 53),
    ("udp", 123),
    ("icmp", 8),
    ("icmp", 0),
)
V6_SERVICES = (*V4_SERVICES[:-2], ("icmpv6", 128), ("icmpv6", 129))


@cache
def _sampled(values: tuple[T, ...]) -> st.SearchStrategy[T]:
    return st.sampled_from(values)


def sample(values: Sequence[T]) -> st.SearchStrategy[T]:
    """`st.sampled_from`, cached: drawing builds no new strategy objects (much faster)."""
    return _sampled(tuple(values))


def doc(kind: str, name: str, tenant: Scope = None, **fields: Any) -> Doc:
    """One raw document; `fields` are its `spec` and optionally `labels`."""
    metadata: dict[str, Any] = {"name": name}
    if tenant is not None:
        metadata["tenant"] = tenant
    labels = fields.pop("labels", None)
    if labels is not None:
        metadata["labels"] = labels
    out: Doc = {"apiVersion": API, "kind": kind, "metadata": metadata}
    if fields.get("spec") is not None:
        out["spec"] = fields["spec"]
    return out


def load(docs: Sequence[Doc]) -> Catalog:
    """Validate and resolve raw documents (raises `DocumentsInvalid`)."""
    return build_catalog([(d, Source("gen", i + 1)) for i, d in enumerate(docs)])


def scope_of(d: Doc) -> Scope:
    tenant: Scope = d["metadata"].get("tenant")
    return tenant


def ref(owner: Scope, target: Scope, name: str) -> str:
    """How a document of scope `owner` names an object of scope `target`."""
    return f"{target}/{name}" if owner is None and target is not None else name


# -- what a fleet offers for references ------------------------------------------------


@dataclass(frozen=True)
class Names:
    """The objects documents may refer to, in document order: (scope, name) pairs."""

    tenants: tuple[str, ...]
    workloads: tuple[tuple[Scope, str], ...]
    groups: tuple[tuple[Scope, str], ...]
    services: tuple[tuple[Scope, str], ...]

    @staticmethod
    def of(docs: Sequence[Doc]) -> Names:
        def pairs(kind: str) -> tuple[tuple[Scope, str], ...]:
            return tuple((scope_of(d), d["metadata"]["name"]) for d in docs if d["kind"] == kind)

        return Names(
            tuple(d["metadata"]["name"] for d in docs if d["kind"] == "Tenant"),
            pairs("Workload"),
            pairs("Group"),
            pairs("Service"),
        )

    def visible(self, objects: Sequence[tuple[Scope, str]], owner: Scope) -> list[str]:
        """References a document of `owner` may write to `objects`."""
        return [ref(owner, s, n) for s, n in objects if owner is None or s == owner]

    def service_refs(self, owner: Scope) -> list[str]:
        return sorted({n for s, n in self.services if s is None or s == owner})


# -- selectors, ports, peers -----------------------------------------------------------


def _leaf(tenants: Sequence[str]) -> st.SearchStrategy[str]:
    keys = list(LABEL_VALUES)
    values = {
        **LABEL_VALUES,
        "hyperwall.io/host": HOSTS,
        "hyperwall.io/tenant": tuple(tenants),
        "hyperwall.io/name": WORKLOAD_NAMES[:4],
    }
    any_key = sample([*keys, *keys, "hyperwall.io/host", "hyperwall.io/tenant"])

    @st.composite
    def term(draw: st.DrawFn) -> str:
        key = draw(any_key | st.just("hyperwall.io/name"))
        pool = values[key]
        op = draw(sample(["==", "!=", "in", "not in", "has", "all", "'"]))
        if op == "has":
            return f"has({key})"
        if op == "all":
            return "all()"
        if op == "'":
            return f"{key} == '{draw(sample(pool))}'"
        if op in ("==", "!="):
            return f'{key} {op} "{draw(sample(pool))}"'
        chosen = draw(st.lists(sample(pool), min_size=1, max_size=2, unique=True))
        return f"{key} {op} {{" + ", ".join(f'"{v}"' for v in chosen) + "}"

    return term()


@cache
def selectors(tenants: tuple[str, ...] = TENANT_NAMES) -> st.SearchStrategy[str]:
    """Selector texts over a tiny label vocabulary, with `!`, `&&`, `||` and parentheses."""

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            inner.map(lambda s: f"!({s})"),
            inner.map(lambda s: f"!{s}" if s.startswith("has(") else f"!({s})"),
            st.tuples(inner, inner).map(lambda t: f"({t[0]}) && ({t[1]})"),
            st.tuples(inner, inner).map(lambda t: f"{t[0]} || {t[1]}"),
        )

    return st.recursive(_leaf(tenants), extend, max_leaves=3)


@st.composite
def peers(draw: st.DrawFn, names: Names, owner: Scope) -> Doc:
    """One `from`/`to` entry that a document of `owner` may write."""
    groups = names.visible(names.groups, owner)
    workloads = names.visible(names.workloads, owner)
    kinds = ["selector", "cidr", "cidr"] + ["group"] * 2 * bool(groups)
    kinds += ["workload"] * 2 * bool(workloads)
    kind = draw(sample(kinds))
    if kind == "group":
        return {"group": draw(sample(groups))}
    if kind == "workload":
        return {"workload": draw(sample(workloads))}
    if kind == "selector":
        return {"selector": draw(selectors(names.tenants))}
    return {"cidr": draw(sample(CIDRS))}


@st.composite
def group_specs(
    draw: st.DrawFn, names: Names, owner: Scope, earlier: Sequence[tuple[Scope, str]]
) -> Doc:
    """A Group spec; nested groups only among `earlier` (so there are no cycles)."""
    spec: Doc = {}
    if draw(st.booleans()):
        spec["selector"] = draw(selectors(names.tenants))
    workloads = names.visible(names.workloads, owner)
    if workloads and draw(st.integers(0, 2)) == 0:
        spec["members"] = draw(st.lists(sample(workloads), max_size=2, unique=True))
    if draw(st.integers(0, 2)) == 0:
        spec["cidrs"] = draw(st.lists(sample(CIDRS), min_size=1, max_size=2, unique=True))
    nested = names.visible(earlier, owner)
    if nested != [] and draw(st.booleans()):
        spec["groups"] = draw(st.lists(sample(nested), min_size=1, max_size=2, unique=True))
    return spec


@st.composite
def rules(draw: st.DrawFn, names: Names, owner: Scope, name: str) -> Doc:
    rule: Doc = {"name": name, "action": draw(sample(ACTIONS))}
    direction = draw(sample([None, "in", "out", "both"]))
    if direction is not None:
        rule["direction"] = direction
    for side in ("from", "to"):
        shape = draw(st.integers(0, 3))  # 0: absent, 1: [], 2-3: some peers
        if shape == 1:
            rule[side] = []
        elif shape >= 2:
            rule[side] = draw(st.lists(peers(names, owner), min_size=1, max_size=2))
    if draw(st.integers(0, 2)) > 0:
        refs = list(PORT_SPECS) + names.service_refs(owner) * 3
        rule["services"] = draw(st.lists(sample(refs), min_size=1, max_size=2))
    if draw(st.integers(0, 3)) == 0:
        rule["log"] = draw(st.booleans())
    return rule


@st.composite
def applied_to(draw: st.DrawFn, names: Names, owner: Scope) -> Doc | None:
    groups = names.visible(names.groups, owner)
    workloads = names.visible(names.workloads, owner)
    kinds = ["absent", "absent", "selector"] + ["group"] * bool(groups)
    kinds += ["workload"] * bool(workloads)
    kind = draw(sample(kinds))
    if kind == "selector":
        return {"selector": draw(selectors(names.tenants))}
    if kind == "group":
        return {"group": draw(sample(groups))}
    if kind == "workload":
        return {"workload": draw(sample(workloads))}
    return None


@st.composite
def policy_docs(draw: st.DrawFn, names: Names, owner: Scope, name: str) -> Doc:
    spec: Doc = {}
    tier = draw(sample([None, *TIERS]))
    if tier is not None:
        spec["tier"] = tier
    priority = draw(sample(PRIORITIES))
    if priority is not None:
        spec["priority"] = priority
    target = draw(applied_to(names, owner))
    if target is not None:
        spec["appliedTo"] = target
    count = draw(st.integers(1, 5))
    rule_names = draw(st.permutations(RULE_NAMES))[:count]
    spec["rules"] = [draw(rules(names, owner, n)) for n in rule_names]
    return doc("Policy", name, owner, spec=spec)


# -- whole fleets ----------------------------------------------------------------------


@st.composite
def labels(draw: st.DrawFn) -> dict[str, str]:
    out = {}
    for key, values in LABEL_VALUES.items():
        value = draw(sample([None, *values]))
        if value is not None:
            out[key] = value
    return out


@st.composite
def workload_docs(
    draw: st.DrawFn, tenants: Sequence[str], count: int, hosts: Sequence[str] = HOSTS
) -> list[Doc]:
    v4 = list(draw(st.permutations(V4_POOL)))
    v6 = list(draw(st.permutations(V6_POOL)))
    keys = draw(
        st.lists(
            st.tuples(sample([None, *tenants]), sample(WORKLOAD_NAMES)),
            min_size=count,
            max_size=count,
            unique=True,
        )
    )
    out = []
    mac = 0
    for tenant, name in keys:
        interfaces = []
        for i in range(draw(st.integers(1, 2))):
            mac += 1
            ips = [v4.pop() for _ in range(draw(sample([0, 1, 1, 1, 2])))]
            ips += [v6.pop() for _ in range(draw(st.integers(0, 1)))]
            interfaces.append({"name": f"eth{i}", "mac": f"52:54:00:00:00:{mac:02x}", "ips": ips})
        spec = {"host": draw(sample(hosts)), "interfaces": interfaces}
        out.append(doc("Workload", name, tenant, labels=draw(labels()), spec=spec))
    return out


@st.composite
def fleets(draw: st.DrawFn) -> list[Doc]:
    """A valid random fleet as raw documents (see the module docstring)."""
    tenants = TENANT_NAMES[: draw(st.integers(1, 2))]
    docs = [
        doc("Tenant", t, spec={"defaultAction": draw(sample(["drop", "allow"]))}) for t in tenants
    ]
    if draw(st.booleans()):  # spec left out: drop
        docs[0].pop("spec")
    docs += draw(workload_docs(tenants, draw(st.integers(2, 7))))
    groups: list[tuple[Scope, str]] = []
    for owner in [*tenants, None]:  # tenant groups first: provider groups may nest them
        count = draw(st.integers(0, 3))
        for name in draw(st.permutations(GROUP_NAMES))[:count]:
            names = Names.of(docs)
            spec = draw(group_specs(names, owner, groups))
            docs.append(doc("Group", name, owner, spec=spec))
            groups.append((owner, name))
    for owner in [None, *tenants]:
        count = draw(st.integers(0, 2))
        for name in draw(st.permutations(SERVICE_NAMES))[:count]:
            ports = draw(st.lists(sample(PORT_SPECS), min_size=1, max_size=3))
            docs.append(doc("Service", name, owner, spec={"ports": ports}))
    names = Names.of(docs)
    keys = draw(
        st.lists(
            st.tuples(sample([None, *tenants]), sample(POLICY_NAMES)),
            min_size=1,
            max_size=5,
            unique=True,
        )
    )
    docs += [draw(policy_docs(names, owner, name)) for owner, name in keys]
    return docs


# -- packets ---------------------------------------------------------------------------


class Probe(NamedTuple):
    """The first packet of a connection: addresses, protocol and port (ICMP: the type)."""

    src: str
    dst: str
    proto: str
    port: int

    @property
    def service(self) -> str:
        """The inline service `hyperwall trace` takes for this packet."""
        return f"{self.proto}/{self.port}"


def workload_ips(docs: Sequence[Doc], family: int) -> list[str]:
    return [
        ip
        for d in docs
        if d["kind"] == "Workload"
        for iface in d["spec"]["interfaces"]
        for ip in iface["ips"]
        if ipaddress.ip_address(ip).version == family
    ]


def probes(docs: Sequence[Doc]) -> st.SearchStrategy[Probe]:
    """Packets between workload addresses and a few external ones, one family each."""

    def for_family(family: int) -> st.SearchStrategy[Probe]:
        pool, external, services = (
            (V4_POOL, V4_EXTERNAL, V4_SERVICES)
            if family == 4
            else (V6_POOL, V6_EXTERNAL, V6_SERVICES)
        )
        own = workload_ips(docs, family)
        unused = [ip for ip in pool if ip not in own][:3]  # inside the generated CIDRs
        outside = sample([*external, *unused])
        address = outside
        if own:  # mostly workload addresses
            address = st.one_of(sample(own), sample(own), outside)
        return st.builds(
            lambda s, d, svc: Probe(s, d, svc[0], svc[1]),
            address,
            address,
            sample(services),
        )

    return st.one_of(for_family(4), for_family(6))


# -- related fleets (incremental compilation) ------------------------------------------


def without_workloads(docs: Sequence[Doc]) -> list[Doc]:
    return [d for d in docs if d["kind"] != "Workload"]


@st.composite
def policy_edits(draw: st.DrawFn, original: Sequence[Doc]) -> list[Doc]:
    """`docs` with one config change: a rule edited/added/removed, a policy's appliedTo,
    tier or priority changed, a policy added or removed, a group or a tenant edited."""
    docs = copy.deepcopy(list(original))
    names = Names.of(docs)
    policies = [i for i, d in enumerate(docs) if d["kind"] == "Policy"]
    groups = [i for i, d in enumerate(docs) if d["kind"] == "Group"]
    tenants = [i for i, d in enumerate(docs) if d["kind"] == "Tenant"]
    edits = ["add-policy", "tenant"] + ["group"] * bool(groups)
    if policies:
        edits += ["rule", "add-rule", "del-rule", "applied", "order", "del-policy"]
    edit = draw(sample(edits))
    if edit == "tenant":
        t = docs[draw(sample(tenants))]
        action = t.get("spec", {}).get("defaultAction", "drop")
        t["spec"] = {"defaultAction": "allow" if action == "drop" else "drop"}
        return docs
    if edit == "group":
        i = draw(sample(groups))
        owner = scope_of(docs[i])
        earlier = [(scope_of(d), d["metadata"]["name"]) for d in docs[:i] if d["kind"] == "Group"]
        docs[i]["spec"] = draw(group_specs(names, owner, earlier))
        return docs
    if edit == "add-policy":
        taken = {(scope_of(docs[i]), docs[i]["metadata"]["name"]) for i in policies}
        free = [(o, n) for o in [None, *names.tenants] for n in (*POLICY_NAMES, "p9")]
        owner, name = draw(sample([k for k in free if k not in taken]))
        docs.append(draw(policy_docs(names, owner, name)))
        return docs
    i = draw(sample(policies))
    policy, owner = docs[i], scope_of(docs[i])
    spec = policy["spec"]
    if edit == "del-policy":
        del docs[i]
    elif edit == "applied":
        target = draw(applied_to(names, owner))
        spec.pop("appliedTo", None)
        if target is not None:
            spec["appliedTo"] = target
    elif edit == "order":
        spec["tier"] = draw(sample(TIERS))
        spec["priority"] = draw(sample([p for p in PRIORITIES if p is not None]))
    else:
        rule_list: list[Doc] = spec["rules"]
        taken_rules = {r["name"] for r in rule_list}
        if edit == "del-rule" and len(rule_list) > 1:
            del rule_list[draw(st.integers(0, len(rule_list) - 1))]
        elif edit == "add-rule" and len(taken_rules) < len(RULE_NAMES):
            name = draw(sample([n for n in RULE_NAMES if n not in taken_rules]))
            at = draw(st.integers(0, len(rule_list)))
            rule_list.insert(at, draw(rules(names, owner, name)))
        else:
            at = draw(st.integers(0, len(rule_list) - 1))
            rule_list[at] = draw(rules(names, owner, rule_list[at]["name"]))
    return docs


def edited_workloads(data: st.DataObject, workloads: dict[str, Workload]) -> dict[str, Workload]:
    """`workloads` after one to three `workload_edits` drawn from `data` (a new dict)."""
    out = dict(workloads)
    declared = list(workloads)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        key, new = data.draw(workload_edits(out, declared), label="edit")
        if new is None:
            out.pop(key, None)
        else:
            out[key] = new
    return out


@st.composite
def workload_edits(
    draw: st.DrawFn, workloads: dict[str, Workload], declared: Sequence[str]
) -> tuple[str, Workload | None]:
    """One inventory change: (key, new workload) for relabel, readdress, migrate or a new
    workload; (key, None) to remove one. `declared` are keys the documents declare (a
    removed one may still be named by groups and policies: it simply matches nothing)."""
    used_ips = {ip for w in workloads.values() for ip in w.ips()}
    used_macs = {i.mac for w in workloads.values() for i in w.interfaces}
    free4 = [ip for ip in V4_POOL if ip not in used_ips]
    free6 = [ip for ip in V6_POOL if ip not in used_ips]
    edits = ["labels", "labels", "host", "add"]
    if free4:
        edits.append("ips")
    if workloads:
        edits.append("remove")
    edit = draw(sample(edits if workloads else ["add"]))
    if edit == "add":
        gone = [k for k in declared if k not in workloads]
        tenants = sorted({w.tenant for w in workloads.values() if w.tenant} | {"acme"})
        fresh = [f"{t}/{n}" for t in tenants for n in ("x", "y")] + ["z"]
        key = draw(sample(gone + [k for k in fresh if k not in workloads]))
        tenant, _, name = key.rpartition("/")
        mac = next(
            f"52:54:00:00:01:{i:02x}"
            for i in range(256)
            if f"52:54:00:00:01:{i:02x}" not in used_macs
        )
        ips = tuple(draw(st.lists(sample(free4 + free6), max_size=2, unique=True)))
        interface = Interface("eth0", mac, ips)
        host = draw(sample(HOSTS))
        return key, Workload(name, tenant or None, host, draw(labels()), (interface,))
    key = draw(sample(sorted(workloads)))
    old = workloads[key]
    if edit == "remove":
        return key, None
    if edit == "labels":
        return key, replace(old, labels=draw(labels()))
    if edit == "host":
        return key, replace(old, host=draw(sample([*HOSTS, "hv3"])))
    first, *rest = old.interfaces
    new_ips = tuple(draw(st.lists(sample(free4 + free6), min_size=1, max_size=2, unique=True)))
    kept = tuple(draw(st.lists(sample(first.ips), unique=True))) if first.ips else ()
    return key, replace(old, interfaces=(replace(first, ips=kept + new_ips), *rest))
