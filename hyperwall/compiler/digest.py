"""A program's digest: a content hash that a delta updates in time proportional to the delta.

The manager tells each agent the digest of the program it should hold; the agent, after
applying a delta, updates its own digest the same way and compares (a mismatch means its
copy diverged: it lists the whole program again). Agents report the digest they enforce and
the manager compares it with the one it expects (realization status).

Definition: the digest is the sum, modulo 2**128, of a 128-bit BLAKE2b hash of every *item*
of the program, where the items are: each address set's existence and each of its
intervals; each block set's existence and each of its elements; each chain whole; each
endpoint whole. Equal programs have equal digests; a sum makes the digest independent of
order and lets a delta add the hashes of what it adds and subtract those of what it removes.
Chains and endpoints are hashed whole because deltas replace them whole.

Per-object sums (a whole address set, block set, chain, endpoint) are cached by object
identity: the incremental compiler and `delta.apply` hand back the same objects for what did
not change, so a program assembled from mostly shared objects is digested in time
proportional to its number of objects, not elements. The cache holds a strong reference to
each object it describes (an `id` cannot be reused while cached) and is cleared when full.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hyperwall.compiler.delta import ElementChange, ProgramDelta
from hyperwall.compiler.program import (
    AddressSet,
    BlockSet,
    Chain,
    Endpoint,
    HostProgram,
    MatchRule,
)

MOD = 1 << 128
CACHE_LIMIT = 200_000

_cache: dict[int, tuple[object, int]] = {}  # id -> (the object, its sum)


def _h(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=16).digest(), "big")


def _sum(texts: Iterable[str]) -> int:
    return sum(map(_h, texts)) % MOD


def _address_items(name: str, elements: Iterable[tuple[int, tuple[int, int]]]) -> Iterable[str]:
    return (f"a|{name}|{family}|{low}|{high}" for family, (low, high) in elements)


def _block_items(name: str, elements: Iterable[Any]) -> Iterable[str]:
    return (f"b|{name}|{'|'.join(map(str, e))}" for e in elements)


def _chain_text(chain: Chain) -> str:
    parts = [f"c|{chain.name}"]
    for item in chain.items:
        if isinstance(item, MatchRule):
            services = "*"
            if item.services is not None:
                services = ",".join(
                    f"{s.proto}:{s.low}:{s.high}:{int(s.any_value)}" for s in item.services
                )
            head = f"m:{item.rule}:{item.action}:{int(item.log)}"
            parts.append(f"{head}:{item.src}:{item.dst}:{services}")
        else:
            parts.append(f"l:{item.block}:{item.action}:{','.join(item.rules)}")
    return "\n".join(parts)


def _endpoint_text(ep: Endpoint) -> str:
    tiers = "/".join(
        ";".join(",".join(chains) for chains in side) for side in (ep.ingress, ep.egress)
    )
    return (
        f"e|{ep.key}|{ep.workload}|{ep.interface}|{ep.tenant}|{ep.mac}|{','.join(ep.ips)}"
        f"|{tiers}|{ep.default}|{int(ep.log_default)}"
    )


def _cached(obj: object, compute: Callable[[], int]) -> int:
    """`compute()` once per object: cached by identity, holding the object (see above)."""
    hit = _cache.get(id(obj))
    if hit is not None and hit[0] is obj:
        return hit[1]
    value = compute() % MOD
    if len(_cache) >= CACHE_LIMIT:
        _cache.clear()
    _cache[id(obj)] = (obj, value)
    return value


def _object_sum(obj: AddressSet | BlockSet | Chain | Endpoint) -> int:
    if isinstance(obj, AddressSet):
        return _cached(
            obj, lambda: _h(f"A|{obj.name}") + _sum(_address_items(obj.name, obj.elements()))
        )
    if isinstance(obj, BlockSet):
        return _cached(
            obj, lambda: _h(f"B|{obj.name}") + _sum(_block_items(obj.name, obj.elements))
        )
    if isinstance(obj, Chain):
        return _cached(obj, lambda: _h(_chain_text(obj)))
    return _cached(obj, lambda: _h(_endpoint_text(obj)))


def program_digest(program: HostProgram) -> int:
    """The digest of a whole program (see the module docstring)."""
    total = _h(f"H|{program.host}")
    for objects in (
        program.address_sets.values(),
        program.block_sets.values(),
        program.chains.values(),
        program.endpoints.values(),
    ):
        for obj in objects:
            total += _object_sum(obj)
    return total % MOD


def _change_sum(change: ElementChange, block: bool) -> int:
    """What an element change adds to a digest (cached: one change is shared by the deltas
    of every host that uses the set)."""
    items = _block_items if block else _address_items
    return _cached(
        change,
        lambda: _sum(items(change.name, change.added)) - _sum(items(change.name, change.removed)),
    )


def _replaced(
    old: Mapping[str, Any], puts: Iterable[tuple[str, Any]], deletes: Iterable[str]
) -> int:
    """What replacing whole objects (puts) and removing others changes in a digest."""
    gone = set(deletes)
    total = -sum(_object_sum(old[name]) for name in gone)
    for name, obj in puts:
        prev = old.get(name)
        if prev is not None and name not in gone:
            total -= _object_sum(prev)
        total += _object_sum(obj)
    return total


def updated_digest(digest: int, old: HostProgram, change: ProgramDelta) -> int:
    """The digest of `delta.apply(old, change)`, from `old`'s digest, in time proportional
    to the change (plus the size of deleted sets, whose elements are subtracted)."""
    total = digest
    total += _replaced(
        old.address_sets,
        ((s.name, s) for s in change.address_sets_put),
        change.address_sets_delete,
    )
    total += _replaced(
        old.block_sets, ((b.name, b) for b in change.block_sets_put), change.block_sets_delete
    )
    total += _replaced(old.chains, ((c.name, c) for c in change.chains_put), change.chains_delete)
    total += _replaced(
        old.endpoints, ((e.key, e) for e in change.endpoints_put), change.endpoints_delete
    )
    total += sum(_change_sum(ec, block=False) for ec in change.address_elements)
    total += sum(_change_sum(ec, block=True) for ec in change.block_elements)
    if change.host and change.host != old.host:
        total += _h(f"H|{change.host}") - _h(f"H|{old.host}")
    return total % MOD


def digest_text(digest: int) -> str:
    """The digest as agents report it: 32 hex digits."""
    return f"{digest:032x}"
