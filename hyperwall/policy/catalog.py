"""Cross-document validation: turns parsed documents into a resolved `Catalog`, or refuses.

Checks what no single document can: duplicates of (kind, tenant, name), unknown tenants and
references, cross-tenant references, group cycles, MAC/IP addresses claimed twice. Every
issue is collected; any issue refuses the whole set (`DocumentsInvalid`). Pure: the files are
read by `hyperwall.io.files`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from hyperwall.policy import documents as d
from hyperwall.policy.errors import DocumentsInvalid, Issue, Source
from hyperwall.policy.model import (
    AssertionDef,
    Catalog,
    Group,
    Interface,
    Peer,
    PolicyConfig,
    PolicyDef,
    RuleDef,
    Service,
    Tenant,
    Workload,
    object_key,
)
from hyperwall.policy.ports import PortMatch, is_inline, parse_port_spec
from hyperwall.policy.selector import parse_selector


@dataclass
class _Builder:
    # True: a reference to a Workload that is not there names a VM that is absent right now
    # (discovered from a hypervisor: VMs come and go) and matches nothing; False: an error;
    # a set of workload keys: only references to those may name an absent workload
    absent_workloads: bool | AbstractSet[str] = False
    issues: list[Issue] = field(default_factory=list)
    seen: dict[tuple[str, str], Source] = field(default_factory=dict)
    tenants: dict[str, tuple[d.TenantDoc, Source]] = field(default_factory=dict)
    workloads: dict[str, tuple[d.WorkloadDoc, Source]] = field(default_factory=dict)
    groups: dict[str, tuple[d.GroupDoc, Source]] = field(default_factory=dict)
    services: dict[str, tuple[d.ServiceDoc, Source]] = field(default_factory=dict)
    policies: dict[str, tuple[d.PolicyDoc, Source]] = field(default_factory=dict)
    assertions: dict[str, tuple[d.AssertionDoc, Source]] = field(default_factory=dict)

    def issue(self, source: Source, path: str, message: str, expected: str = "") -> None:
        self.issues.append(Issue(source, path, message, expected))

    # -- registration -------------------------------------------------------------------

    def add(self, doc: d.Document, source: Source) -> None:
        key = object_key(doc.metadata.tenant, doc.metadata.name)
        first = self.seen.get((doc.kind, key))
        if first is not None:
            self.issue(
                source,
                "metadata.name",
                f"duplicate {doc.kind} {key!r}",
                f"a unique name (first defined in {first})",
            )
            return
        self.seen[(doc.kind, key)] = source
        if isinstance(doc, d.TenantDoc):
            self.tenants[key] = (doc, source)
        elif isinstance(doc, d.WorkloadDoc):
            self.workloads[key] = (doc, source)
        elif isinstance(doc, d.GroupDoc):
            self.groups[key] = (doc, source)
        elif isinstance(doc, d.ServiceDoc):
            self.services[key] = (doc, source)
        elif isinstance(doc, d.AssertionDoc):
            self.assertions[key] = (doc, source)
        else:
            self.policies[key] = (doc, source)

    # -- references ---------------------------------------------------------------------

    def resolve(
        self,
        kind: str,
        ref: str,
        owner: str | None,
        table: dict[str, Any],
        source: Source,
        path: str,
    ) -> str | None:
        """Resolve a Group/Workload reference written in a document of tenant `owner`."""
        tenant, _, name = ref.rpartition("/")
        if tenant and owner is not None and tenant != owner:
            self.issue(
                source,
                path,
                f"cross-tenant reference to {kind} {ref!r}",
                f"a {kind} of tenant {owner!r}",
            )
            return None
        key = object_key(tenant or owner, name)
        if key not in table and kind == "Workload" and self.may_be_absent(key):
            return key
        if key not in table:
            scope = f"tenant {tenant or owner!r}" if (tenant or owner) else "provider scope"
            self.issue(source, path, f"unknown {kind} {ref!r}", f"a {kind} defined in {scope}")
            return None
        return key

    def may_be_absent(self, key: str) -> bool:
        if isinstance(self.absent_workloads, bool):
            return self.absent_workloads
        return key in self.absent_workloads

    def check_tenant(self, doc: d.Document, source: Source) -> None:
        tenant = doc.metadata.tenant
        if tenant is not None and tenant not in self.tenants:
            self.issue(source, "metadata.tenant", f"unknown tenant {tenant!r}", "a Tenant document")

    def peer(
        self, raw: d.Peer | d.AppliedTo, owner: str | None, source: Source, path: str
    ) -> Peer | None:
        if raw.group is not None:
            key = self.resolve("Group", raw.group, owner, self.groups, source, f"{path}.group")
            return Peer("group", key) if key else None
        if raw.workload is not None:
            key = self.resolve(
                "Workload", raw.workload, owner, self.workloads, source, f"{path}.workload"
            )
            return Peer("workload", key) if key else None
        if raw.selector is not None:
            return Peer("selector", raw.selector, parse_selector(raw.selector), owner)
        assert isinstance(raw, d.Peer) and raw.cidr is not None
        return Peer("cidr", raw.cidr)

    def service(
        self, ref: str, owner: str | None, source: Source, path: str
    ) -> tuple[PortMatch, ...] | None:
        if is_inline(ref):
            return (parse_port_spec(ref),)
        for key in ([object_key(owner, ref)] if owner else []) + [ref]:
            if key in self.services:
                doc, _ = self.services[key]
                return tuple(parse_port_spec(p) for p in doc.spec.ports)
        self.issue(
            source,
            path,
            f"unknown service {ref!r}",
            "a Service name"
            + (f" of tenant {owner!r} or provider scope" if owner else "")
            + ", or an inline port like tcp/443",
        )
        return None

    # -- building -----------------------------------------------------------------------

    def claim(
        self,
        owners: dict[str, tuple[str, Source]],
        value: str,
        what: str,
        key: str,
        source: Source,
        path: str,
    ) -> None:
        """Record that workload `key` uses address `value`; an address used twice is an error."""
        prev = owners.get(value)
        if prev is None:
            owners[value] = (key, source)
        elif prev[0] == key:
            self.issue(source, path, f"{what} {value} is given twice in this workload")
        else:
            self.issue(
                source,
                path,
                f"{what} {value} already belongs to workload {prev[0]!r} ({prev[1]})",
                f"a {what} unique in the fleet",
            )

    def build_workloads(self) -> dict[str, Workload]:
        macs: dict[str, tuple[str, Source]] = {}
        ips: dict[str, tuple[str, Source]] = {}
        out: dict[str, Workload] = {}
        for key, (doc, source) in self.workloads.items():
            self.check_tenant(doc, source)
            for i, iface in enumerate(doc.spec.interfaces):
                self.claim(macs, iface.mac, "MAC", key, source, f"spec.interfaces[{i}].mac")
                for j, ip in enumerate(iface.ips):
                    self.claim(ips, ip, "IP", key, source, f"spec.interfaces[{i}].ips[{j}]")
            out[key] = workload_of(doc)
        return out

    def build_groups(self) -> dict[str, Group]:
        out: dict[str, Group] = {}
        for key, (doc, source) in self.groups.items():
            self.check_tenant(doc, source)
            owner, spec = doc.metadata.tenant, doc.spec
            members = [
                self.resolve("Workload", m, owner, self.workloads, source, f"spec.members[{i}]")
                for i, m in enumerate(spec.members)
            ]
            nested = [
                self.resolve("Group", g, owner, self.groups, source, f"spec.groups[{i}]")
                for i, g in enumerate(spec.groups)
            ]
            out[key] = Group(
                tenant=owner,
                name=doc.metadata.name,
                selector=parse_selector(spec.selector) if spec.selector else None,
                members=tuple(m for m in members if m),
                cidrs=tuple(spec.cidrs),
                groups=tuple(g for g in nested if g),
            )
        self.check_cycles(out)
        return out

    def check_cycles(self, groups: dict[str, Group]) -> None:
        state: dict[str, int] = {}  # 1 = on the stack, 2 = done
        reported: set[frozenset[str]] = set()

        def visit(key: str, stack: list[str]) -> None:
            state[key] = 1
            stack.append(key)
            for child in groups[key].groups:
                if state.get(child) == 1:
                    cycle = [*stack[stack.index(child) :], child]
                    if frozenset(cycle) not in reported:
                        reported.add(frozenset(cycle))
                        _, source = self.groups[child]
                        self.issue(
                            source,
                            "spec.groups",
                            "group cycle: " + " -> ".join(cycle),
                            "nested groups without cycles",
                        )
                elif child not in state:
                    visit(child, stack)
            stack.pop()
            state[key] = 2

        for key in sorted(groups):
            if key not in state:
                visit(key, [])

    def build_services(self) -> dict[str, Service]:
        out: dict[str, Service] = {}
        for key, (doc, source) in self.services.items():
            self.check_tenant(doc, source)
            ports = tuple(parse_port_spec(p) for p in doc.spec.ports)
            out[key] = Service(doc.metadata.tenant, doc.metadata.name, ports)
        return out

    def services_of(
        self, refs: list[str] | None, owner: str | None, source: Source, base: str
    ) -> tuple[PortMatch, ...] | None:
        """The ports of a rule's or an assertion's `services` (None: absent or empty = any)."""
        if not refs:
            return None
        found = [
            self.service(s, owner, source, f"{base}.services[{j}]") for j, s in enumerate(refs)
        ]
        return tuple(dict.fromkeys(p for f in found if f for p in f))

    def peers(
        self, raws: list[d.Peer], owner: str | None, source: Source, path: str
    ) -> tuple[Peer, ...]:
        found = [self.peer(p, owner, source, f"{path}[{j}]") for j, p in enumerate(raws)]
        return tuple(p for p in found if p)

    def build_assertions(self) -> dict[str, AssertionDef]:
        out: dict[str, AssertionDef] = {}
        for key, (doc, source) in self.assertions.items():
            self.check_tenant(doc, source)
            owner, spec = doc.metadata.tenant, doc.spec
            out[key] = AssertionDef(
                tenant=owner,
                name=doc.metadata.name,
                description=spec.description,
                sources=self.peers(spec.from_, owner, source, "spec.from"),
                destinations=self.peers(spec.to, owner, source, "spec.to"),
                services=self.services_of(spec.services, owner, source, "spec"),
                expect=spec.expect,
            )
        return out

    def build_policies(self) -> dict[str, PolicyDef]:
        out: dict[str, PolicyDef] = {}
        for key, (doc, source) in self.policies.items():
            self.check_tenant(doc, source)
            owner, spec = doc.metadata.tenant, doc.spec
            applied = (
                self.peer(spec.appliedTo, owner, source, "spec.appliedTo")
                if spec.appliedTo
                else None
            )
            rules = []
            for i, raw in enumerate(spec.rules):
                base = f"spec.rules[{i}]"
                rules.append(
                    RuleDef(
                        id=f"{key}/{raw.name}",
                        name=raw.name,
                        action=raw.action,
                        direction=raw.direction,
                        sources=self.peers(raw.from_, owner, source, f"{base}.from"),
                        destinations=self.peers(raw.to, owner, source, f"{base}.to"),
                        services=self.services_of(raw.services, owner, source, base),
                        log=raw.log,
                    )
                )
            out[key] = PolicyDef(
                owner, doc.metadata.name, spec.tier, spec.priority, applied, tuple(rules)
            )
        return out


def workload_of(doc: d.WorkloadDoc) -> Workload:
    """The resolved Workload of a parsed Workload document (it references nothing)."""
    return Workload(
        name=doc.metadata.name,
        tenant=doc.metadata.tenant,
        host=doc.spec.host,
        labels=dict(doc.metadata.labels),
        interfaces=tuple(Interface(i.name, i.mac, tuple(i.ips)) for i in doc.spec.interfaces),
    )


Parsed = tuple[d.Document | None, Sequence[Issue], Source]
"""One document after `documents.parse_document`: the model (None if refused), its issues,
and where it came from."""


def build_catalog(
    documents: Iterable[tuple[Any, Source]], absent_workloads: bool | AbstractSet[str] = False
) -> Catalog:
    """Validate decoded documents (with their sources) and resolve them, or raise.
    `absent_workloads`: references to Workloads that are not there match nothing (the
    workloads come from a hypervisor) instead of being errors; a set of workload keys
    allows that for those only."""
    return build_parsed(
        ((*d.parse_document(raw, source), source) for raw, source in documents), absent_workloads
    )


def build_parsed(
    documents: Iterable[Parsed], absent_workloads: bool | AbstractSet[str] = False
) -> Catalog:
    """`build_catalog` of documents already parsed (by a caller that keeps the models)."""
    builder = _Builder(absent_workloads=absent_workloads)
    for doc, issues, source in documents:
        builder.issues.extend(issues)
        if doc is not None:
            builder.add(doc, source)
    tenants = {
        key: Tenant(key, doc.spec.defaultAction, doc.spec.logDefault)
        for key, (doc, _) in builder.tenants.items()
    }
    workloads = builder.build_workloads()
    groups = builder.build_groups()
    services = builder.build_services()
    policies = builder.build_policies()
    assertions = builder.build_assertions()
    if builder.issues:
        raise DocumentsInvalid(builder.issues)
    return Catalog(PolicyConfig(tenants, groups, services, policies, assertions), workloads)
