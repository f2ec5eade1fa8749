"""The workloads the compiler knows: placed by host and tenant, their addresses per family,
and the selector index; which workloads a selector or a workload peer picks within a scope.

Mutated only by `compiler.fleet.FleetCompiler` (`place`/`unplace`); read by its counterparts
`compiler.groups` (group membership) and `compiler.address_sets`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from hyperwall.compiler.intervals import Interval, merge, split_families
from hyperwall.compiler.naming import selector_id
from hyperwall.policy.model import Peer, Workload
from hyperwall.policy.selector import Selector
from hyperwall.policy.selector_index import SelectorIndex

Families = tuple[tuple[Interval, ...], tuple[Interval, ...]]  # (IPv4, IPv6), merged


class Inventory:
    """Workloads by key, host and tenant, with their addresses and the selector index."""

    def __init__(self) -> None:
        self.workloads: dict[str, Workload] = {}
        self.by_host: dict[str, set[str]] = defaultdict(set)
        self.by_tenant: dict[str | None, set[str]] = defaultdict(set)
        self.index = SelectorIndex()
        self._intervals: dict[str, Families] = {}

    def place(self, w: Workload) -> None:
        self.workloads[w.key] = w
        self._intervals[w.key] = split_families(w.ips())
        self.by_host[w.host].add(w.key)
        self.by_tenant[w.tenant].add(w.key)

    def unplace(self, w: Workload) -> None:
        del self.workloads[w.key]
        del self._intervals[w.key]
        self.by_host[w.host].discard(w.key)
        self.by_tenant[w.tenant].discard(w.key)

    def scoped(self, ids: Iterable[str], tenant: str | None) -> frozenset[str]:
        """`ids` within `tenant` (None: no limit)."""
        if tenant is None:
            return frozenset(ids)
        return frozenset(self.by_tenant.get(tenant, set()).intersection(ids))

    def selected(self, selector: Selector, tenant: str | None) -> frozenset[str]:
        return self.scoped(self.index.matches_view(selector_id(selector)), tenant)

    def picked(self, peer: Peer) -> frozenset[str]:
        """The workloads a selector or workload peer picks (groups: `compiler.groups`)."""
        if peer.kind == "selector":
            assert peer.selector is not None
            return self.selected(peer.selector, peer.scope)
        return frozenset((peer.value,)) if peer.value in self.workloads else frozenset()

    def addresses(
        self, members: Iterable[str], v4: Iterable[Interval] = (), v6: Iterable[Interval] = ()
    ) -> Families:
        """The addresses of workloads `members` with `v4` and `v6`, merged per family."""
        all4, all6 = list(v4), list(v6)
        for wk in members:
            w4, w6 = self._intervals[wk]
            all4.extend(w4)
            all6.extend(w6)
        return merge(all4), merge(all6)
