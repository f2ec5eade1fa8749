"""The policy compiler: policy config + inventory + host -> `HostProgram`, incrementally.

`FleetCompiler` holds the derived state of a whole fleet and keeps it current under
workload changes (`set_workload`, `remove_workload`) and policy edits (`set_config`),
recomputing only what a change touches. `host_program(host)` assembles one host's slice.
`compile_host` is the plain pure function over the same code. No I/O anywhere here.

This module is the composition root of the compiler's state and owns what policies apply
to (appliedTo, endpoints) and the selector references; its parts, one concept each:
- `compiler.naming`: the names of sets and chains, scopes, `TargetIndex`;
- `compiler.inventory`: the workloads, by host and tenant, and the selector index;
- `compiler.groups`: group membership;
- `compiler.address_sets`: the addresses of rules' peers;
- `compiler.chains`: chain state and chain compilation (with `compiler.fold`).
Its counterpart `compiler.fleet_programs` keeps every host's program current with it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from operator import attrgetter

from hyperwall.compiler.address_sets import AddressSets
from hyperwall.compiler.chains import FOLD_LIMIT, Chains, ChainState, CompiledChain, common_ends
from hyperwall.compiler.groups import GroupMembership
from hyperwall.compiler.inventory import Inventory
from hyperwall.compiler.naming import (
    DIRECTIONS,
    Dir,
    TargetIndex,
    chain_name,
    in_scope,
    policy_selectors,
    scope_of,
    selector_id,
)
from hyperwall.compiler.program import TIERS, AddressSet, BlockSet, Chain, Endpoint, HostProgram
from hyperwall.policy.model import TIER_ORDER, PolicyConfig, PolicyDef, Workload
from hyperwall.policy.selector import Selector

__all__ = ["FOLD_LIMIT", "CompiledChain", "FleetCompiler", "common_ends", "compile_host"]

_direction = attrgetter("direction")


class FleetCompiler:
    """Derived fleet state, kept current under changes; see the module docstring."""

    def __init__(
        self, config: PolicyConfig, workloads: Iterable[Workload] = (), fold_limit: int = FOLD_LIMIT
    ) -> None:
        self.fold_limit = fold_limit
        self.inventory = Inventory()
        self.workloads = self.inventory.workloads
        self.by_host = self.inventory.by_host
        self.by_tenant = self.inventory.by_tenant
        self.index = self.inventory.index
        self._chain_states: dict[str, ChainState] = {}  # outlive dropped chains: see design
        for w in workloads:
            self.inventory.place(w)
            self.index.set_workload(w.key, w.selector_labels())
        self._load_config(config)

    # -- configuration ------------------------------------------------------------------

    def _load_config(self, config: PolicyConfig) -> None:
        self.config = config
        self._sid_refs: dict[str, int] = defaultdict(int)
        for g in config.groups.values():
            if g.selector is not None:
                self._ref_selector(g.selector)
        self.groups = GroupMembership(config.groups, self.inventory)
        self.sets = AddressSets(self.inventory, self.groups)
        self.chains = Chains(self.sets, self._chain_states, self.fold_limit)
        self._applies: dict[str, frozenset[str]] = {}
        self._applied: dict[str, set[str]] = defaultdict(set)  # workload -> policies (reverse)
        self._policies_by_target = TargetIndex()  # policies by what their appliedTo names
        self._scope_policies: set[str] = set()  # policies without appliedTo
        self._directions: dict[str, frozenset[str]] = {}  # policy -> directions of its rules
        self._endpoints: dict[str, tuple[Endpoint, ...]] = {}
        for policy in config.policies.values():
            self._add_policy(policy)
        self.chains.prune(config.policies)

    def set_config(self, config: PolicyConfig) -> None:
        """Replace the policy config; policy edits are incremental, others rebuild."""
        old = self.config
        if old.tenants != config.tenants or old.groups != config.groups:
            for sid in list(self._sid_refs):
                self.index.remove_selector(sid)
            self._load_config(config)
            return
        self.config = config
        keys = set(old.policies) | set(config.policies)
        for key in sorted(keys):
            before, after = old.policies.get(key), config.policies.get(key)
            if before == after:
                continue
            touched: set[str] = set()
            if before is not None and after is not None:
                # only the selectors of the rules that differ change their references; new
                # ones first, so that a selector in both keeps its index entry and sets
                prefix, suffix = common_ends(before.rules, after.rules)
                gained = policy_selectors(after.rules[prefix : len(after.rules) - suffix], after)
                for selector in gained:
                    self._ref_selector(selector)
                lost = policy_selectors(before.rules[prefix : len(before.rules) - suffix], before)
                touched |= self._remove_policy(before, lost)
                touched |= self._add_policy(after, ())
            elif before is not None:
                touched |= self._remove_policy(before)
                self.chains.drop_policy(key, forget=True)  # a policy that is gone
            elif after is not None:
                touched |= self._add_policy(after)
            for wk in touched:
                self._endpoints.pop(wk, None)

    def _ref_selector(self, selector: Selector) -> str:
        sid = selector_id(selector)
        if self._sid_refs[sid] == 0:
            self.index.add_selector(sid, selector)
        self._sid_refs[sid] += 1
        return sid

    def _unref_selector(self, selector: Selector) -> None:
        sid = selector_id(selector)
        self._sid_refs[sid] -= 1
        if self._sid_refs[sid] == 0:
            del self._sid_refs[sid]
            self.index.remove_selector(sid)
            for name in self.sets.forget_selector(sid):
                self.chains.drop_readers(name)

    def _add_policy(
        self, policy: PolicyDef, selectors: Iterable[Selector] | None = None
    ) -> set[str]:
        """Register `policy`; `selectors`: those to reference (default: all it names)."""
        for selector in policy_selectors(policy.rules, policy) if selectors is None else selectors:
            self._ref_selector(selector)
        self._directions[policy.key] = frozenset(map(_direction, policy.rules))
        if policy.applied_to is None:
            self._scope_policies.add(policy.key)
        else:
            self._policies_by_target.add(policy.applied_to, policy.key)
        applies = self._compute_applies(policy)
        self._set_applies(policy.key, applies)
        return set(applies)

    def _remove_policy(
        self, policy: PolicyDef, selectors: Iterable[Selector] | None = None
    ) -> set[str]:
        """Unregister `policy`; `selectors`: those to release (default: all it names)."""
        self._directions.pop(policy.key, None)
        self.chains.drop_policy(policy.key)
        self._scope_policies.discard(policy.key)
        if policy.applied_to is not None:
            self._policies_by_target.discard(policy.applied_to, policy.key)
        applies = self._applies.get(policy.key, frozenset())
        self._set_applies(policy.key, None)
        for selector in policy_selectors(policy.rules, policy) if selectors is None else selectors:
            self._unref_selector(selector)
        return set(applies)

    # -- address sets and chains --------------------------------------------------------

    def address_set(self, name: str) -> AddressSet:
        return self.sets.get(name)

    def chain(self, name: str) -> CompiledChain:
        return self.chains.get(name, self.config.policies, self._directions)

    # -- applied-to and endpoints -------------------------------------------------------

    def _compute_applies(self, policy: PolicyDef) -> frozenset[str]:
        scope = self.workloads.keys() if policy.tenant is None else self.by_tenant[policy.tenant]
        target = policy.applied_to
        if target is None:
            return frozenset(scope)
        if target.kind == "group":
            picked = self.groups.members_of(target.value)
        else:
            picked = self.inventory.picked(target)
        return frozenset(scope & set(picked))

    def _set_applies(self, key: str, applies: frozenset[str] | None) -> None:
        """Policy `key` applies to `applies` now (None: the policy is gone); keeps the
        reverse map (workload -> policies) that endpoints are built from."""
        old = self._applies.get(key, frozenset())
        new = applies or frozenset()
        for wk in old - new:
            self._applied[wk].discard(key)
        for wk in new - old:
            self._applied[wk].add(key)
        if applies is None:
            self._applies.pop(key, None)
        else:
            self._applies[key] = applies

    def _refresh_applies(self, policies: set[str]) -> set[str]:
        """Recompute applied-to of `policies`; return the workloads whose policy list changed."""
        touched: set[str] = set()
        for key in policies:
            policy = self.config.policies.get(key)
            if policy is None:
                continue
            old = self._applies.get(key, frozenset())
            new = self._compute_applies(policy)
            if new == old:
                continue
            self._set_applies(key, new)
            touched |= old ^ new
        return touched

    def _has_rules(self, policy: PolicyDef, direction: Dir) -> bool:
        return not self._directions[policy.key].isdisjoint((direction, "both"))

    def endpoints(self, wk: str) -> tuple[Endpoint, ...]:
        found = self._endpoints.get(wk)
        if found is None:
            found = self._endpoints[wk] = self._build_endpoints(self.workloads[wk])
        return found

    def _build_endpoints(self, w: Workload) -> tuple[Endpoint, ...]:
        policies = sorted(
            (self.config.policies[k] for k in self._applied.get(w.key, ())),
            key=PolicyDef.order_key,
        )
        dispatch: dict[Dir, list[list[str]]] = {"in": [[] for _ in range(TIERS)], "out": []}
        dispatch["out"] = [[] for _ in range(TIERS)]
        for policy in policies:
            for direction in DIRECTIONS:
                if self._has_rules(policy, direction):
                    dispatch[direction][TIER_ORDER[policy.tier]].append(
                        chain_name(direction, policy.key)
                    )
        tenant = self.config.tenants.get(w.tenant) if w.tenant else None
        ingress = tuple(tuple(t) for t in dispatch["in"])
        egress = tuple(tuple(t) for t in dispatch["out"])
        return tuple(
            Endpoint(
                key=f"{w.key}/{iface.name}",
                workload=w.key,
                interface=iface.name,
                tenant=w.tenant,
                mac=iface.mac,
                ips=iface.ips,
                ingress=ingress,
                egress=egress,
                default=tenant.default_action if tenant else "drop",
                log_default=tenant.log_default if tenant else False,
            )
            for iface in w.interfaces
        )

    # -- inventory changes --------------------------------------------------------------

    def set_workload(self, w: Workload) -> None:
        """Add or update a workload (labels, addresses, host)."""
        old = self.workloads.get(w.key)
        if old == w:
            return
        if old is not None:
            self.inventory.unplace(old)
        self.inventory.place(w)
        changed_sids = self.index.set_workload(w.key, w.selector_labels())
        self._propagate(
            w.key, changed_sids, membership=old is None, ips=old is None or old.ips() != w.ips()
        )

    def remove_workload(self, key: str) -> None:
        old = self.workloads.get(key)
        if old is None:
            return
        self.inventory.unplace(old)
        changed_sids = self.index.remove_workload(key)
        self._propagate(key, changed_sids, membership=True, ips=True)
        self._endpoints.pop(key, None)

    def _propagate(self, wk: str, changed_sids: set[str], membership: bool, ips: bool) -> None:
        tenant = scope_of(wk)
        changed_groups = self.groups.refresh(
            self.groups.dirty(wk, tenant, changed_sids, membership)
        )
        dirty_sets = self.sets.dirty(wk, changed_sids, changed_groups, membership, ips)
        for name in self.sets.refresh(dirty_sets):
            self.chains.drop_readers(name)
        policies = self.config.policies
        dirty_policies = self._policies_by_target.affected(
            changed_sids,
            lambda key, sid: in_scope(policies[key].applied_to, sid, tenant),
            changed_groups,
            wk if membership else None,
        )
        if membership:
            self._rescope(wk)
        for touched in self._refresh_applies(dirty_policies) | {wk}:
            self._endpoints.pop(touched, None)

    def _rescope(self, wk: str) -> None:
        """A workload came or went: adjust the policies without appliedTo in its scope."""
        present = wk in self.workloads
        tenant = scope_of(wk)
        for key in self._scope_policies:
            if self.config.policies[key].tenant not in (None, tenant):
                continue
            applies = self._applies[key]
            self._applies[key] = applies | {wk} if present else applies - {wk}
            if present:
                self._applied[wk].add(key)
            else:
                self._applied[wk].discard(key)

    # -- assembly -----------------------------------------------------------------------

    def host_program(self, host: str) -> HostProgram:
        return self.program(host, sorted(self.by_host.get(host, ())))

    def workload_program(self, wk: str) -> HostProgram:
        """The part of its host's program that workload `wk`'s endpoints read (their
        chains, blocks and sets): what evaluating a packet at them needs (`analysis.trace`)."""
        return self.program(self.workloads[wk].host, [wk])

    def program(self, host: str, workloads: Iterable[str]) -> HostProgram:
        """The program of `workloads` (of `host`): their endpoints and what those read."""
        endpoints: dict[str, Endpoint] = {}
        chain_names: set[str] = set()
        for wk in workloads:
            for ep in self.endpoints(wk):
                endpoints[ep.key] = ep
                for tier in (*ep.ingress, *ep.egress):
                    chain_names.update(tier)
        chains: dict[str, Chain] = {}
        blocks: dict[str, BlockSet] = {}
        set_names: set[str] = set()
        for name in sorted(chain_names):
            compiled = self.chain(name)
            chains[name] = compiled.chain
            blocks.update(compiled.blocks)
            set_names |= compiled.match_sets
        sets = {name: self.address_set(name) for name in sorted(set_names)}
        return HostProgram(host, sets, blocks, chains, endpoints)

    def hosts(self) -> list[str]:
        return sorted(h for h, ws in self.by_host.items() if ws)


def compile_host(
    config: PolicyConfig, workloads: Mapping[str, Workload] | Iterable[Workload], host: str
) -> HostProgram:
    """The pure function: documents' config + inventory + host name -> the host's program."""
    items = workloads.values() if isinstance(workloads, Mapping) else workloads
    return FleetCompiler(config, items).host_program(host)
