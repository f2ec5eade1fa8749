"""A host's program: what one hypervisor host enforces, as frozen values.

The compiler (`compiler.fleet`) produces it, the delta (`compiler.delta`) compares two of them,
the reference evaluator (`hyperwall.evaluator`) executes it and the nftables backend renders
it. Its shape follows the kernel's: mostly static chains, dynamic state in named sets.

- `AddressSet`: the addresses of a group, workload, selector, CIDR or union of those, as
  merged intervals per family. Shared by every rule that names the same peers.
- `Chain`: the rules of one policy in one direction (`in:acme/shop`), shared by every
  interface the policy applies to. Items are `MatchRule`s (one policy rule, set lookups on
  both addresses) or `LookupRule`s (a run of consecutive rules with one action folded into
  one concatenated-set lookup, `BlockSet`), so rule count does not become chain length.
- `Endpoint`: one VM interface: its identity (anti-spoofing), and its dispatch: for each
  direction and tier the chains to run, in order; then its tenant's default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from hyperwall.compiler.intervals import Interval
from hyperwall.policy.model import Action, Verdict
from hyperwall.policy.ports import PortMatch

# One element of a folded block: family, source interval, destination interval, protocol
# number (0 = any protocol), port or ICMP-type range, and the id of the rule it comes from
# (the block's first matching rule decides, in the order of `LookupRule.rules`).
BlockElement = tuple[int, int, int, int, int, int, int, int, str]

TIERS = 4  # emergency, infrastructure, environment, application


@dataclass(frozen=True, slots=True)
class AddressSet:
    name: str
    v4: tuple[Interval, ...]
    v6: tuple[Interval, ...]

    def elements(self) -> frozenset[tuple[int, Interval]]:
        return frozenset([(4, i) for i in self.v4] + [(6, i) for i in self.v6])


@dataclass(frozen=True, slots=True)
class BlockSet:
    name: str
    elements: frozenset[BlockElement]


@dataclass(frozen=True, slots=True)
class MatchRule:
    """One policy rule: source and destination set lookups (None = any) and services."""

    rule: str
    action: Action
    log: bool
    src: str | None
    dst: str | None
    services: tuple[PortMatch, ...] | None


@dataclass(frozen=True, slots=True)
class LookupRule:
    """Consecutive rules with one action, folded into one lookup of `BlockSet` `block`."""

    block: str
    action: Action
    rules: tuple[str, ...]


ChainItem = MatchRule | LookupRule


@dataclass(frozen=True, slots=True)
class Chain:
    name: str
    items: tuple[ChainItem, ...]


@dataclass(frozen=True, slots=True)
class Endpoint:
    key: str  # "acme/web-1/eth0": workload key and interface name
    workload: str
    interface: str
    tenant: str | None
    mac: str
    ips: tuple[str, ...]
    ingress: tuple[tuple[str, ...], ...]  # per tier, chain names in evaluation order
    egress: tuple[tuple[str, ...], ...]
    default: Verdict
    log_default: bool
    # the host-side device, when the hypervisor named it (libvirt's `vnet0`): set on the host
    # by `hypervisor.localize`, never by the compiler; None: named from the MAC
    ifname: str | None = None

    def dispatch(self, direction: Literal["in", "out"]) -> tuple[tuple[str, ...], ...]:
        return self.ingress if direction == "in" else self.egress


@dataclass(frozen=True, slots=True)
class HostProgram:
    host: str
    address_sets: Mapping[str, AddressSet]
    block_sets: Mapping[str, BlockSet]
    chains: Mapping[str, Chain]
    endpoints: Mapping[str, Endpoint]

    def size(self) -> dict[str, int]:
        return {
            "endpoints": len(self.endpoints),
            "chains": len(self.chains),
            "chain_items": sum(len(c.items) for c in self.chains.values()),
            "address_sets": len(self.address_sets),
            "address_elements": sum(len(s.v4) + len(s.v6) for s in self.address_sets.values()),
            "block_sets": len(self.block_sets),
            "block_elements": sum(len(b.elements) for b in self.block_sets.values()),
        }
