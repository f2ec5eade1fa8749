"""The validated, resolved policy model: what the compiler and the reference oracle read.

Documents (`documents`) are what users write; `catalog.build_catalog` checks them against
each other and produces these frozen values, with every reference resolved to a key:
`TENANT/NAME` for a tenant's object, `NAME` for a provider-scope one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from hyperwall.policy.ports import PortMatch
from hyperwall.policy.selector import Selector

Action = Literal["allow", "drop", "reject", "pass"]
Verdict = Literal["allow", "drop", "reject"]
Direction = Literal["in", "out", "both"]

TIER_ORDER: dict[str, int] = {
    "emergency": 0,
    "infrastructure": 1,
    "environment": 2,
    "application": 3,
}
TIER_NAMES: tuple[str, ...] = tuple(TIER_ORDER)

PSEUDO_NAME = "hyperwall.io/name"
PSEUDO_TENANT = "hyperwall.io/tenant"
PSEUDO_HOST = "hyperwall.io/host"


def object_key(tenant: str | None, name: str) -> str:
    """The key of a tenant-scoped (`acme/web`) or provider-scoped (`web`) object."""
    return f"{tenant}/{name}" if tenant else name


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    default_action: Literal["drop", "allow"] = "drop"
    log_default: bool = False


@dataclass(frozen=True, slots=True)
class Interface:
    name: str
    mac: str
    ips: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Workload:
    """A VM: declared in documents or discovered on a host (the inventory)."""

    name: str
    tenant: str | None
    host: str
    labels: Mapping[str, str] = field(hash=False)
    interfaces: tuple[Interface, ...]

    @property
    def key(self) -> str:
        return object_key(self.tenant, self.name)

    def selector_labels(self) -> dict[str, str]:
        """Labels plus the pseudo-labels that selectors see."""
        out = dict(self.labels)
        out[PSEUDO_NAME] = self.name
        out[PSEUDO_HOST] = self.host
        if self.tenant is not None:
            out[PSEUDO_TENANT] = self.tenant
        return out

    def ips(self) -> tuple[str, ...]:
        return tuple(ip for iface in self.interfaces for ip in iface.ips)


@dataclass(frozen=True, slots=True)
class Group:
    tenant: str | None
    name: str
    selector: Selector | None
    members: tuple[str, ...]  # workload keys
    cidrs: tuple[str, ...]
    groups: tuple[str, ...]  # group keys

    @property
    def key(self) -> str:
        return object_key(self.tenant, self.name)


@dataclass(frozen=True, slots=True)
class Service:
    tenant: str | None
    name: str
    ports: tuple[PortMatch, ...]

    @property
    def key(self) -> str:
        return object_key(self.tenant, self.name)


@dataclass(frozen=True, slots=True)
class Peer:
    """A resolved `from`/`to`/`appliedTo` entry.

    kind "group"/"workload": `value` is the object key; "cidr": the network text;
    "selector": `selector` is set and `scope` is the tenant whose workloads it may pick
    (None for a provider document: every workload).
    """

    kind: Literal["group", "workload", "selector", "cidr"]
    value: str
    selector: Selector | None = None
    scope: str | None = None


@dataclass(frozen=True, slots=True)
class RuleDef:
    id: str  # "tenant/policy/rule" or "policy/rule"
    name: str
    action: Action
    direction: Direction
    sources: tuple[Peer, ...]  # empty = any
    destinations: tuple[Peer, ...]  # empty = any
    services: tuple[PortMatch, ...] | None  # None = any
    log: bool


@dataclass(frozen=True, slots=True)
class PolicyDef:
    tenant: str | None
    name: str
    tier: str
    priority: int
    applied_to: Peer | None
    rules: tuple[RuleDef, ...]

    @property
    def key(self) -> str:
        return object_key(self.tenant, self.name)

    def order_key(self) -> tuple[int, int, str, int, str]:
        """Tier, priority, policy name, provider before tenant, tenant name."""
        return (
            TIER_ORDER[self.tier],
            self.priority,
            self.name,
            0 if self.tenant is None else 1,
            self.tenant or "",
        )


@dataclass(frozen=True, slots=True)
class AssertionDef:
    """A compliance assertion (`docs/policy.md`, "Assertions"): every case from `sources` to
    `destinations` on `services` has the `expect`ed verdict. It compiles to nothing; the
    checker (`hyperwall.analysis.assertions`) reads it."""

    tenant: str | None
    name: str
    description: str
    sources: tuple[Peer, ...]  # empty = any address
    destinations: tuple[Peer, ...]  # empty = any address
    services: tuple[PortMatch, ...] | None  # None = every protocol and port
    expect: Literal["allow", "deny"]

    @property
    def key(self) -> str:
        return object_key(self.tenant, self.name)


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Everything but the workloads: what the manager versions and the compiler reads
    (the compiler ignores `assertions`), in document order."""

    tenants: Mapping[str, Tenant]
    groups: Mapping[str, Group]
    services: Mapping[str, Service]
    policies: Mapping[str, PolicyDef]
    assertions: Mapping[str, AssertionDef] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Catalog:
    """A validated document set: the policy and the declared workloads (inventory)."""

    config: PolicyConfig
    workloads: Mapping[str, Workload]
