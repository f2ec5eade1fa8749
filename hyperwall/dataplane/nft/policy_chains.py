"""Policy chains: a compiled `Chain` as nft chains `p_*`, with the log chains `l_*` of its
logged rules, and the tier chains `t_*` that jump them in order. Pure.

Counterpart of `compiler.program` (the chains to enforce) and `nft.base_chains` (whose
dispatch chains jump the tier chains). One nft rule per `MatchRule` and family, with
lookups of address sets `a_*`; for a `LookupRule`, one lookup per block set shape `k_*` that
holds elements (a block of TCP rules between single addresses is one hash lookup, not 24).
So a policy chain's rules depend on which of its blocks' shapes are empty: when a change
empties or fills one, the chains that look the block up are rendered again (`nft.backend`).

A `pass` sets mark bit 31 (`PASS_MARK`) and returns; the tier chain returns on it (and
clears it), so the next tier decides. All of the pass mark is in this module. An allow
marks the connection (`ct mark`) with the rule that admitted it (`nft.ct_mark`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Container, Iterator

from hyperwall.compiler.program import Chain, HostProgram, LookupRule, MatchRule
from hyperwall.dataplane.nft.ct_mark import admit
from hyperwall.dataplane.nft.expr import (
    Expr,
    dump,
    ip_protocol,
    log,
    match,
    meta,
    payload,
    verdict,
)
from hyperwall.dataplane.nft.table import (
    SHAPES,
    ChainSpec,
    address_set_name,
    block_set_name,
    policy_chain_name,
    short,
)
from hyperwall.policy.ports import PORT_PROTOS, PortMatch

PASS_MARK = 0x80000000
# A block's name -> the shapes of its sets that hold elements (the lookups worth rendering).
ShapesOf = Callable[[str], Container[str]]


def all_shapes(_block: str) -> Container[str]:
    return SHAPES


# -- the pass mark -----------------------------------------------------------------------

# A `pass` decided: set the mark and return to the tier chain.
_SET_PASS: Expr = [
    {"mangle": {"key": meta("mark"), "value": {"|": [meta("mark"), PASS_MARK]}}},
    {"return": None},
]
# In a tier chain after a policy chain that can pass: on the mark, clear it and return.
_RETURN_ON_PASS: Expr = [
    match({"&": [meta("mark"), PASS_MARK]}, PASS_MARK),
    {"mangle": {"key": meta("mark"), "value": {"&": [meta("mark"), PASS_MARK - 1]}}},
    {"return": None},
]


def passing_chains(program: HostProgram) -> frozenset[str]:
    """The chains of `program` that can pass (their tier chains check the mark after them)."""
    return frozenset(
        name for name, c in program.chains.items() if any(i.action == "pass" for i in c.items)
    )


# -- policy chains -----------------------------------------------------------------------


def _services_exprs(services: tuple[PortMatch, ...] | None, family: int | None) -> list[Expr]:
    """Alternatives (one nft rule each) matching `services` for `family` (None: both)."""
    if services is None or any(s.proto == "any" for s in services):
        return [[]]
    ports = [s for s in services if s.proto in PORT_PROTOS]
    out: list[Expr] = []
    if ports:
        if any(s.any_value for s in ports):
            protos = sorted({s.proto for s in ports if s.any_value})
            out.append([match(meta("l4proto"), {"set": protos})])
        narrow = [s for s in ports if not s.any_value]
        if narrow:
            elems = [
                {"concat": [s.proto, s.low if s.low == s.high else {"range": [s.low, s.high]}]}
                for s in sorted(narrow)
            ]
            out.append(
                [match({"concat": [meta("l4proto"), payload("th", "dport")]}, {"set": elems})]
            )
    for proto, fam in (("icmp", 4), ("icmpv6", 6)):
        icmp = [s for s in services if s.proto == proto]
        if not icmp or (family is not None and family != fam):
            continue
        if any(s.any_value for s in icmp):
            out.append([match(meta("l4proto"), proto)])
        else:
            types = sorted({s.low for s in icmp})
            out.append([match(payload(proto, "type"), {"set": types})])
    return out


def log_chain(rule: str, action: str, direction: str = "in") -> ChainSpec:
    """The chain a logged rule jumps to with goto: log (rate-limited), then decide."""
    decide: Expr = (
        _SET_PASS
        if action == "pass"
        else [*admit(action, rule, direction), verdict(action, direction)]
    )
    rules = (dump(log(rule, action, direction)), dump(decide))
    key = rule + action + ("" if direction == "in" else direction)
    return ChainSpec(f"l_{short(key)}", rules, comment=f"log {rule}")


def _decision(action: str, rule: str, logged: bool, direction: str, folded: bool = False) -> Expr:
    """Count, then decide; an allow first marks the connection with its rule (`ct_mark`)."""
    if logged:
        return [{"counter": None}, {"goto": {"target": log_chain(rule, action, direction).name}}]
    if action == "pass":
        return [{"counter": None}, *_SET_PASS]
    return [{"counter": None}, *admit(action, rule, direction, folded), verdict(action, direction)]


def chain_direction(chain_name: str) -> str:
    """A policy chain's end: "in" (the receiver's) or "out" (the sender's), from its name."""
    return "out" if chain_name.startswith("out:") else "in"


def _match_rule(item: MatchRule, direction: str) -> Iterator[Expr]:
    decision = _decision(item.action, item.rule, item.log, direction)
    if item.src is None and item.dst is None:
        for services in _services_exprs(item.services, None):
            yield [*services, *decision]
        return
    for family in (4, 6):
        addrs: Expr = []
        for side, name in (("saddr", item.src), ("daddr", item.dst)):
            if name is not None:
                addrs.append(
                    match(payload(ip_protocol(family), side), "@" + address_set_name(name, family))
                )
        for services in _services_exprs(item.services, family):
            yield [*addrs, *services, *decision]


def _lookup_rule(item: LookupRule, direction: str, shapes: Container[str]) -> Iterator[Expr]:
    decision = _decision(item.action, item.rules[0], False, direction, folded=True)
    for shape in SHAPES:
        if shape not in shapes:
            continue  # an empty set: its lookup would cost every new connection for nothing
        family, kind = int(shape[0]), shape[1]
        ip = ip_protocol(family)
        keys = [payload(ip, "saddr"), payload(ip, "daddr")]
        if kind == "s":
            keys = [payload(ip, "saddr")]
        elif kind == "d":
            keys = [payload(ip, "daddr")]
        proto: Expr = []
        if kind in "esd":
            proto = [match(meta("l4proto"), int(shape[2:]))]
            keys.append(payload("th", "dport"))
        elif kind == "p":
            keys += [meta("l4proto"), payload("th", "dport")]
        elif kind == "i":
            keys.append(payload("icmp" if family == 4 else "icmpv6", "type"))
        lookup = match({"concat": keys}, "@" + block_set_name(item.block, shape))
        yield [*proto, lookup, *decision]


def render_policy_chain(chain: Chain, shapes_of: ShapesOf = all_shapes) -> list[ChainSpec]:
    """The policy chain, and the log chains its logged rules go to (their names do not
    depend on `shapes_of`)."""
    rules: list[str] = []
    extra: list[ChainSpec] = []
    direction = chain_direction(chain.name)
    for item in chain.items:
        if isinstance(item, MatchRule):
            rules.extend(dump(e) for e in _match_rule(item, direction))
            if item.log:
                extra.append(log_chain(item.rule, item.action, direction))
        else:
            rules.extend(dump(e) for e in _lookup_rule(item, direction, shapes_of(item.block)))
    return [ChainSpec(policy_chain_name(chain.name), tuple(rules), comment=chain.name), *extra]


def tier_chain(chains: tuple[str, ...], passing: frozenset[str]) -> ChainSpec:
    """The chain that jumps `chains` in order (one tier of a dispatch), returning after one
    in `passing` that passed."""
    rules: list[str] = []
    for name in chains:
        rules.append(dump([{"jump": {"target": policy_chain_name(name)}}]))
        if name in passing:
            rules.append(dump(_RETURN_ON_PASS))
    key = json.dumps([chains, sorted(passing & set(chains))])
    return ChainSpec(f"t_{short(key)}", tuple(rules), comment="tier: " + ", ".join(chains))
