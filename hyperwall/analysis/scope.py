"""Which assertions a change touches: the incremental mode of `analysis.assertions`.

An assertion's result is a function of the decisions at the endpoints of the workloads in
its `from` and `to` sets (at the addresses of those sets) and of which of those addresses
are workloads'. A change that only puts and deletes Workloads changes a decision only
through the changed workloads: their endpoints, their membership in the sets that rules
name, and their addresses. If no changed workload, in its old or its new version, lies in
an assertion's `from` or `to`, then none of the endpoints it reads changed (their labels
and policies are the same), none of the addresses it reads changed owner, and every set a
rule names is the same on those addresses: its result is the same. Changes to any other
kind may move any rule and touch everything. Pure.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from functools import lru_cache
from itertools import compress
from operator import is_not
from typing import TypeVar

from hyperwall.policy.model import AssertionDef, Catalog, Peer, PolicyConfig, Workload

K = TypeVar("K")
V = TypeVar("V")


def _in_group(config: PolicyConfig, key: str, w: Workload, seen: set[str]) -> bool:
    if key in seen:
        return False
    seen.add(key)
    group = config.groups.get(key)
    if group is None:
        return False
    scoped = group.tenant is None or group.tenant == w.tenant
    if w.key in group.members and scoped:
        return True
    if group.selector is not None and scoped and group.selector.matches(w.selector_labels()):
        return True
    if _in_cidrs(group.cidrs, w):
        return True
    return any(_in_group(config, child, w, seen) for child in group.groups)


def _in_cidrs(cidrs: Iterable[str], w: Workload) -> bool:
    nets = [_network(c) for c in cidrs]
    return any(_address(ip) in net for net in nets for ip in w.ips())


@lru_cache(maxsize=4096)
def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr)


@lru_cache(maxsize=4096)
def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(ip)


def selects(config: PolicyConfig, peers: tuple[Peer, ...], w: Workload) -> bool:
    """Whether `peers` (none: everything) stand for an address of workload `w`."""
    if not peers:
        return True
    for p in peers:
        if p.kind == "group" and _in_group(config, p.value, w, set()):
            return True
        if p.kind == "workload" and p.value == w.key:
            return True
        if p.kind == "cidr" and _in_cidrs([p.value], w):
            return True
        if (
            p.kind == "selector"
            and p.selector is not None
            and (p.scope is None or p.scope == w.tenant)
            and p.selector.matches(w.selector_labels())
        ):
            return True
    return False


def same_policy(old: PolicyConfig, new: PolicyConfig) -> bool:
    return all(
        a is b or a == b
        for a, b in (
            (old.tenants, new.tenants),
            (old.groups, new.groups),
            (old.services, new.services),
            (old.policies, new.policies),
        )
    )


def changed_keys(old: Mapping[K, V], new: Mapping[K, V]) -> list[K]:
    """The keys added, removed, or whose value is another object and not equal: those
    of `old` in its order, then the ones only `new` has. When both have the same keys in
    the same order (a catalog copied and edited in place), the values are compared by
    identity in C and only the differing ones by equality."""
    if old is new:
        return []
    if len(old) == len(new) and list(old) == list(new):
        moved = compress(old.keys(), map(is_not, old.values(), new.values()))
        return [k for k in moved if old[k] != new[k]]
    out = [k for k, v in old.items() if k not in new or (new[k] is not v and new[k] != v)]
    out.extend(k for k in new if k not in old)
    return out


def changed_workloads(old: Catalog, new: Catalog) -> list[Workload]:
    """Every workload added, removed or edited, in its old and its new version."""
    keys = changed_keys(old.workloads, new.workloads)
    return [
        *(old.workloads[k] for k in keys if k in old.workloads),
        *(new.workloads[k] for k in keys if k in new.workloads),
    ]


def _touches(a: AssertionDef, changed: list[Workload], old: Catalog, new: Catalog) -> bool:
    configs = (old.config,) if old.config is new.config else (old.config, new.config)
    for w in changed:
        for config in configs:
            if selects(config, a.sources, w) or selects(config, a.destinations, w):
                return True
    return False


def touched_assertions(old: Catalog, new: Catalog) -> frozenset[str]:
    """Keys of the assertions of `new` whose result may differ from their result over
    `old` (see the module docstring)."""
    assertions = new.config.assertions
    if not same_policy(old.config, new.config):
        return frozenset(assertions)
    changed = changed_workloads(old, new)
    return frozenset(
        key
        for key, a in assertions.items()
        if old.config.assertions.get(key) != a or _touches(a, changed, old, new)
    )
