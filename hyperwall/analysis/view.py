"""A fleet as the analyses read it: a `FleetCompiler` plus indexes of who owns which address.

`FleetView` answers the questions every analysis asks (`analysis.assertions`, `reach`,
`lint`): which addresses a list of peers stands for (the same addresses a rule with those
peers matches), which addresses are workloads' and through which endpoint, and what an
endpoint's rules are as boxes (`analysis.decisions`, cached per endpoint, direction and own
address). Pure: builds or borrows a compiler, does no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from hyperwall.analysis.decisions import FULL, Box, endpoint_boxes
from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.intervals import Interval, address_interval, split_families
from hyperwall.compiler.inventory import Families
from hyperwall.compiler.program import Endpoint
from hyperwall.policy.model import Catalog, Peer

FAMILIES = (4, 6)


@dataclass(frozen=True, slots=True)
class Owner:
    """The workload endpoint an address belongs to."""

    endpoint: Endpoint
    workload: str


def address_text(family: int, value: int) -> str:
    return str(ipaddress.IPv4Address(value) if family == 4 else ipaddress.IPv6Address(value))


class FleetView:
    """See the module docstring. `compiler`, when given, must be over `catalog` already."""

    def __init__(self, catalog: Catalog, compiler: FleetCompiler | None = None) -> None:
        self.catalog = catalog
        self.compiler = compiler or FleetCompiler(catalog.config, catalog.workloads.values())
        self._owners: dict[int, dict[int, Owner]] = {4: {}, 6: {}}
        for wk in catalog.workloads:
            for ep in self.compiler.endpoints(wk):
                for ip in ep.ips:
                    family, (value, _) = address_interval(ip)
                    self._owners[family][value] = Owner(ep, wk)
        self.workload_ips: dict[int, list[int]] = {f: sorted(self._owners[f]) for f in FAMILIES}
        self._boxes: dict[tuple[str, str, int], list[Box]] = {}

    def owner(self, family: int, value: int) -> Owner | None:
        return self._owners[family].get(value)

    def boxes(
        self, owner: Owner, direction: Literal["in", "out"], family: int, own: int
    ) -> list[Box]:
        key = (owner.endpoint.key, direction, own)
        found = self._boxes.get(key)
        if found is None:
            found = self._boxes[key] = endpoint_boxes(
                self.compiler, owner.endpoint, direction, family, own
            )
        return found

    def peer_addresses(self, peers: Iterable[Peer]) -> Families:
        """The addresses of `peers` (none: every address), as a rule naming them matches."""
        peers = tuple(peers)
        if not peers:
            return FULL[4], FULL[6]
        v4: list[Interval] = []
        v6: list[Interval] = []
        members: set[str] = set()
        inventory = self.compiler.inventory
        for p in peers:
            if p.kind == "group":
                g4, g6 = self.compiler.groups.intervals(p.value)
                v4.extend(g4)
                v6.extend(g6)
            elif p.kind == "cidr":
                c4, c6 = split_families([p.value])
                v4.extend(c4)
                v6.extend(c6)
            elif p.kind == "workload":
                if p.value in inventory.workloads:
                    members.add(p.value)
            else:
                assert p.selector is not None
                scope = (
                    inventory.workloads
                    if p.scope is None
                    else inventory.by_tenant.get(p.scope, set())
                )
                members.update(
                    wk
                    for wk in scope
                    if p.selector.matches(inventory.workloads[wk].selector_labels())
                )
        return inventory.addresses(members, v4, v6)
