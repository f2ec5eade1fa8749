"""Renders a `HostProgram` into nftables objects of one table (`inet hyperwall`). Pure.

Counterpart of `compiler.program` (what to enforce) and `nft.backend` (which sends these
objects to the kernel). Layout of the table (routed attachment; bridge mode adds tagging):

- base chain `forward` (forward, priority 0), one per packet: `ct state
  established,related` goes to chain `established`, where interface . source IP must be the
  VM's own (a hit accepts; a miss from a VM interface is spoofed), `invalid` drops. A new
  connection from a VM is dispatched by one lookup of interface . MAC . IP (`@from4/6`) to
  the sender's dispatch chain, where an allow is `goto to_vm` (not accept), so the receiving
  end is still checked; a miss from a known VM interface is spoofed, from an unknown one
  drops (fail closed). Then chain `to_vm`: a packet to a VM interface is dispatched by
  interface . destination IP (`@to4/6`) to the receiver's dispatch chain (an allow there
  is accept); a miss to a known VM interface is misdirected (a VM receives only its own
  addresses, which is what lets block sets hold only this host's addresses: `Clip`), to an
  unknown one drops; anything not to a VM is accepted. One base chain, so an established
  packet costs one chain traversal and one lookup.
- base chain `host_in` (input): VMs may reach the host only for DHCP and ND/MLD.
- dispatch chains `d_*` (one per distinct dispatch, shared by endpoints): jump each tier
  chain `t_*`, then the default verdict. Tier chains jump policy chains `p_*` in order; a
  `pass` sets mark bit 31 and returns, and the tier chain returns on it.
- policy chains: one nft rule per `MatchRule` and family, lookups of address sets `a_*`;
  for a `LookupRule`, one lookup per set shape `k_*` that holds elements (a block of TCP
  rules between single addresses is one hash lookup, not 24). So a policy chain's rules
  depend on which of its blocks' shapes are empty: when a change empties or fills one, the
  chains that look the block up are rendered again (`nft.backend`).
- logged rules `goto` a small chain `l_*` that logs (rate-limited, NFLOG) and decides.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hyperwall.compiler.intervals import V4_MAX, V6_MAX
from hyperwall.compiler.program import (
    AddressSet,
    BlockSet,
    Chain,
    Endpoint,
    HostProgram,
    LookupRule,
    MatchRule,
)
from hyperwall.policy.ports import PORT_PROTOS, PortMatch

TABLE = "hyperwall"
FAMILY = "inet"
PASS_MARK = 0x80000000
LOG_GROUP = 100
LOG_RATE = 200  # log lines per second per rule before the kernel's limit drops them
# Block set shapes, per family: exact-match hash sets for single addresses and ports
# (e: src . dst . port, s: src . port with any dst, d: dst . port with any src), one set per
# port protocol (the shape name ends in its number: "4e6" is IPv4 TCP), stay O(1) to look
# up and to load; the kernel's concatenated interval sets (pipapo: p ports, i ICMP types,
# a any protocol) take ranges, but cost grows with their size (measured: 10k elements took
# 3.6 s of kernel time to load and slowed every lookup). The protocol is in the set's name
# rather than a key field because every field costs: loading 240,000 elements of three
# fields took ~20% less CPU (libnftables and kernel) than of four.
EXACT_PROTOS = (6, 17, 132)  # tcp, udp, sctp: the protocols with ports
SHAPES = tuple(
    [f"{f}{k}{p}" for f in (4, 6) for k in "esd" for p in EXACT_PROTOS]
    + [f"{f}{k}" for f in (4, 6) for k in "pia"]
)

Expr = list[dict[str, Any]]
Element = tuple[Any, ...]
# A block's name -> the shapes of its sets that hold elements (the lookups worth rendering).
ShapesOf = Callable[[str], Container[str]]


def all_shapes(_block: str) -> Container[str]:
    return SHAPES


def short(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def vm_ifname(mac: str, prefix: str = "hwt") -> str:
    """The host-side interface name of a VM interface in the lab: prefix + MAC hex."""
    return prefix + mac.replace(":", "")


@dataclass(frozen=True, slots=True)
class SetSpec:
    name: str
    type: tuple[str, ...]
    interval: bool = False
    verdict_map: bool = False


@dataclass(frozen=True, slots=True)
class ChainSpec:
    name: str
    rules: tuple[str, ...]  # each rule's expression list, as canonical JSON text
    hook: tuple[str, int] | None = None  # (hook, priority) for base chains
    comment: str = ""  # the program object it renders (readable; not read back)
    known_digest: str | None = None  # set when read back from the kernel (rules unknown)

    @property
    def digest(self) -> str:
        if self.known_digest is not None:
            return self.known_digest
        return short(json.dumps([self.hook, self.rules]))


@dataclass
class TableState:
    """A table's content as comparable values: what we want, or what the kernel has."""

    sets: dict[str, SetSpec] = field(default_factory=dict)
    elements: dict[str, set[Element]] = field(default_factory=dict)
    chains: dict[str, ChainSpec] = field(default_factory=dict)

    def put_set(self, spec: SetSpec, elements: set[Element]) -> None:
        self.sets[spec.name] = spec
        self.elements[spec.name] = elements


@dataclass(frozen=True, slots=True)
class Options:
    vm_prefix: str = "hwt"  # host-side VM interfaces are named with this prefix
    ifname_of: Callable[[Endpoint], str] | None = None  # default: vm_ifname(mac, prefix)
    mode: str = "routed"  # "routed" (VM links routed by the host) or "bridge" (br_netfilter)
    clip: bool = True  # load block elements only for the host's own addresses (`Clip`)

    def ifname(self, ep: Endpoint) -> str:
        return self.ifname_of(ep) if self.ifname_of else vm_ifname(ep.mac, self.vm_prefix)


# -- expressions -------------------------------------------------------------------------


def _meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def _payload(protocol: str, fieldname: str) -> dict[str, Any]:
    return {"payload": {"protocol": protocol, "field": fieldname}}


def _match(left: Any, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _ip(family: int) -> str:
    return "ip" if family == 4 else "ip6"


def address_text(family: int, value: int) -> str:
    if family == 4:  # hot for 100k-element sets: no ipaddress objects
        return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"
    return str(ipaddress.IPv6Address(value))


def _range(family: int, low: int, high: int) -> Any:
    if low == high:
        return address_text(family, low)
    return {"range": [address_text(family, low), address_text(family, high)]}


TO_VM = "to_vm"  # the receiving end's checks; an egress allow continues there


def _verdict(action: str, direction: str = "in") -> dict[str, Any]:
    """The nft verdict of an action at one end (`direction` "out" = the sender's end)."""
    if action == "allow":
        return {"goto": {"target": TO_VM}} if direction == "out" else {"accept": None}
    if action == "drop":
        return {"drop": None}
    return {"jump": {"target": "reject"}}


def _dump(expr: Expr) -> str:
    return json.dumps(expr, sort_keys=True, separators=(",", ":"))


def _services_exprs(services: tuple[PortMatch, ...] | None, family: int | None) -> list[Expr]:
    """Alternatives (one nft rule each) matching `services` for `family` (None: both)."""
    if services is None or any(s.proto == "any" for s in services):
        return [[]]
    ports = [s for s in services if s.proto in PORT_PROTOS]
    out: list[Expr] = []
    if ports:
        if any(s.any_value for s in ports):
            protos = sorted({s.proto for s in ports if s.any_value})
            out.append([_match(_meta("l4proto"), {"set": protos})])
        narrow = [s for s in ports if not s.any_value]
        if narrow:
            elems = [
                {"concat": [s.proto, s.low if s.low == s.high else {"range": [s.low, s.high]}]}
                for s in sorted(narrow)
            ]
            out.append(
                [_match({"concat": [_meta("l4proto"), _payload("th", "dport")]}, {"set": elems})]
            )
    for proto, fam in (("icmp", 4), ("icmpv6", 6)):
        icmp = [s for s in services if s.proto == proto]
        if not icmp or (family is not None and family != fam):
            continue
        if any(s.any_value for s in icmp):
            out.append([_match(_meta("l4proto"), proto)])
        else:
            types = sorted({s.low for s in icmp})
            out.append([_match(_payload(proto, "type"), {"set": types})])
    return out


# -- names -------------------------------------------------------------------------------


def address_set_name(name: str, family: int) -> str:
    return f"a_{short(name)}_{family}"


def block_set_name(name: str, shape: str) -> str:
    return f"k_{short(name)}_{shape}"


def policy_chain_name(name: str) -> str:
    return f"p_{short(name)}"


# -- sets --------------------------------------------------------------------------------


def render_address_set(s: AddressSet) -> list[tuple[SetSpec, set[Element]]]:
    return [
        (SetSpec(address_set_name(s.name, 4), ("ipv4_addr",), True), set(s.v4)),
        (SetSpec(address_set_name(s.name, 6), ("ipv6_addr",), True), set(s.v6)),
    ]


EXPAND = 64  # a block element over small address ranges becomes this many exact ones at most


_FULL = {4: V4_MAX, 6: V6_MAX}
_EXACT = {(f, p): (f"{f}e{p}", f"{f}s{p}", f"{f}d{p}") for f in (4, 6) for p in EXACT_PROTOS}


def block_shape(set_name: str) -> str:
    """The shape of a block set from its name (`block_set_name`): "4e6", "6p", ..."""
    return set_name.rsplit("_", 1)[1]


def block_shapes(element: tuple[Any, ...], clip: Clip | None = None) -> list[tuple[str, Element]]:
    """The nft set shapes of a block element and its values there (without the rule id)."""
    return [(shape, v) for shape, values in split_block([element], clip).items() for v in values]


@dataclass(frozen=True, slots=True)
class Local:
    """The host's own endpoint addresses, sorted per family: what a block is clipped to."""

    v4: tuple[int, ...] = ()
    v6: tuple[int, ...] = ()
    set4: frozenset[int] = field(init=False, compare=False, repr=False)  # for membership
    set6: frozenset[int] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "set4", frozenset(self.v4))
        object.__setattr__(self, "set6", frozenset(self.v6))

    def of(self, family: int) -> tuple[int, ...]:
        return self.v4 if family == 4 else self.v6


@dataclass(frozen=True, slots=True)
class Clip:
    """Which side of a block's elements is clipped to the host's own addresses: a block of an
    `in` chain is only ever looked up for packets to a local endpoint (its destination), one
    of an `out` chain for packets from one (its source). The rest of the element can never
    match here, so it is not loaded: a host holds elements for its own VMs, not the fleet's.
    Sound because every packet that reaches the lookup has that side among the host's
    addresses: sources by anti-spoofing; destinations because `to_vm` drops a packet to a VM
    interface that is not addressed to that VM (routed), or dispatches by destination address
    (bridge)."""

    side: int  # index of the side's low bound in a block element: 1 source, 3 destination
    local: Local


def local_addresses(program: HostProgram) -> Local:
    found: dict[int, set[int]] = {4: set(), 6: set()}
    for ep in program.endpoints.values():
        for ip in ep.ips:
            address = ipaddress.ip_address(ip)
            found[address.version].add(int(address))
    return Local(tuple(sorted(found[4])), tuple(sorted(found[6])))


def block_clip(block: str, local: Local | None) -> Clip | None:
    """The clip of block `block` (named `b:in:...` or `b:out:...` by the compiler)."""
    if local is None:
        return None
    if block.startswith("b:in:"):
        return Clip(3, local)
    if block.startswith("b:out:"):
        return Clip(1, local)
    return None


def clip_range(element: tuple[Any, ...], clip: Clip) -> tuple[int, int] | None:
    """The clipped side of `element` as (low, high); None if it is any address (never
    clipped)."""
    low, high = element[clip.side], element[clip.side + 1]
    if low == 0 and high == _FULL[element[0]]:
        return None
    return low, high


def clipped(element: tuple[Any, ...], clip: Clip) -> list[tuple[Any, ...]] | None:
    """`element` clipped to the local addresses: None if unchanged (the side is any, or every
    address of it is local, or too many are to list), else the pieces (maybe none)."""
    bounds = clip_range(element, clip)
    if bounds is None:
        return None
    low, high = bounds
    family, side = element[0], clip.side
    addresses = clip.local.of(family)
    first, last = bisect_left(addresses, low), bisect_right(addresses, high)
    count = last - first
    if count == high - low + 1 or count > EXPAND:
        return None
    pieces = []
    for a in addresses[first:last]:
        piece = list(element)
        piece[side] = piece[side + 1] = a
        pieces.append(tuple(piece))
    return pieces


def split_block(
    elements: Iterable[tuple[Any, ...]], clip: Clip | None = None
) -> dict[str, set[Element]]:
    """Block elements by nft set shape, as that shape's values (without the rule id), each
    first clipped to the host's own addresses by `clip` (see `Clip`).

    A single port or a short port range with single or few addresses on each side (a
    group's merged range of a few VMs) goes to the exact-match hash sets, expanded address by
    address and port by port (at most `EXPAND` values per element); anything else to the
    interval sets as it is. Measured: one lookup in a concatenated interval set (pipapo,
    AVX2 in a VM) costs about 2 us of CPU even with one element, a hash lookup a fraction of
    that, and every new connection through the chain pays it. The compiler keeps a block's
    elements disjoint per protocol, so the expanded values are unique. (Hot: one loop turn
    per rule on a full load.)"""
    out: dict[str, set[Element]] = {}
    side = clip.side if clip is not None else 0
    own = (clip.local.set4, clip.local.set6) if clip is not None else (frozenset(), frozenset())
    for element in elements:
        family, sl, sh, dl, dh, proto, low, high, _ = element
        if sl == sh and dl == dh and low == high and proto in EXACT_PROTOS:  # most rules
            if side and (sl if side == 1 else dl) not in own[family == 6]:
                continue  # clipped away: that address is not on this host
            shape = _EXACT[family, proto][0]
            found = out.get(shape)
            if found is None:
                found = out[shape] = set()
            found.add((sl, sl, dl, dl, proto, low, low))
            continue
        if clip is None:
            _place(out, element)
            continue
        pieces = clipped(element, clip)
        if pieces is None:
            _place(out, element)
        else:
            for piece in pieces:
                _place(out, piece)
    return out


def _place(out: dict[str, set[Element]], element: tuple[Any, ...]) -> None:
    """Adds one block element's values to the shapes they go to."""
    family, sl, sh, dl, dh, proto, low, high, _ = element
    if proto in EXACT_PROTOS and high - low < EXPAND:
        full = _FULL[family]
        srcs = 0 if sl == 0 and sh == full else sh - sl + 1  # 0: any
        dsts = 0 if dl == 0 and dh == full else dh - dl + 1
        ports = high - low + 1
        if (
            srcs <= EXPAND
            and dsts <= EXPAND
            and (srcs or 1) * (dsts or 1) * ports <= EXPAND
            and srcs + dsts
        ):
            e, s, d = _EXACT[family, proto]
            if srcs == 1 and dsts == 1 and ports == 1:
                _values(out, e).add((sl, sl, dl, dl, proto, low, low))
            elif srcs and dsts:
                _values(out, e).update(
                    (a, a, b, b, proto, p, p)
                    for a in range(sl, sh + 1)
                    for b in range(dl, dh + 1)
                    for p in range(low, high + 1)
                )
            elif srcs:
                _values(out, s).update(
                    (a, a, 0, full, proto, p, p)
                    for a in range(sl, sh + 1)
                    for p in range(low, high + 1)
                )
            else:
                _values(out, d).update(
                    (0, full, b, b, proto, p, p)
                    for b in range(dl, dh + 1)
                    for p in range(low, high + 1)
                )
            return
    shape, value = _interval_shape(element)
    _values(out, shape).add(value)


def _values(by_shape: dict[str, set[Element]], shape: str) -> set[Element]:
    found = by_shape.get(shape)
    if found is None:
        found = by_shape[shape] = set()
    return found


def _interval_shape(element: tuple[Any, ...]) -> tuple[str, Element]:
    family, sl, sh, dl, dh, proto, low, high, _ = element
    if proto == 0:
        return f"{family}a", (sl, sh, dl, dh)
    if proto in (1, 58):
        return f"{family}i", (sl, sh, dl, dh, low, high)
    return f"{family}p", (sl, sh, dl, dh, proto, low, high)


def block_set_specs(name: str) -> list[SetSpec]:
    specs = []
    for shape in SHAPES:
        family, kind = int(shape[0]), shape[1]
        addr = "ipv4_addr" if family == 4 else "ipv6_addr"
        port = ("inet_proto", "inet_service")
        types = {
            "e": (addr, addr, "inet_service"),
            "s": (addr, "inet_service"),
            "d": (addr, "inet_service"),
            "p": (addr, addr, *port),
            "i": (addr, addr, "icmp_type" if family == 4 else "icmpv6_type"),
            "a": (addr, addr),
        }[kind]
        specs.append(SetSpec(block_set_name(name, shape), types, kind not in "esd"))
    return specs


def render_block_set(b: BlockSet, local: Local | None = None) -> list[tuple[SetSpec, set[Element]]]:
    by_shape = split_block(b.elements, block_clip(b.name, local))
    return [(spec, by_shape.get(block_shape(spec.name), set())) for spec in block_set_specs(b.name)]


def element_json(spec: SetSpec, element: Element) -> Any:
    """An element of our canonical form as nftables JSON: the readable reference of
    `wire.element_encoder`, which writes the same as text without the objects. Protocols
    are numbers: nft looks a name up in /etc/protocols for every element."""
    kind = spec.name[:2]
    if spec.verdict_map:
        key = element[0] if len(element) == 2 else {"concat": list(element[:-1])}
        return [key, {"jump": {"target": element[-1]}}]
    if spec.type == ("ifname",):
        return element[0]
    if kind == "a_":
        family = 4 if spec.type[0] == "ipv4_addr" else 6
        return _range(family, element[0], element[1])
    if kind == "k_" and not spec.interval:  # exact shapes: plain values
        family = 4 if spec.type[0] == "ipv4_addr" else 6
        kind = block_shape(spec.name)[1]  # the protocol is the set's (render.SHAPES)
        addrs = {"e": [element[0], element[2]], "s": [element[0]], "d": [element[2]]}[kind]
        return {"concat": [*(address_text(family, a) for a in addrs), element[5]]}
    if kind == "k_":
        family = 4 if spec.type[0] == "ipv4_addr" else 6
        parts = [_range(family, element[0], element[1]), _range(family, element[2], element[3])]
        if len(element) == 7:
            parts.append(element[4])
            parts.append({"range": [element[5], element[6]]})
        elif len(element) == 6:
            parts.append({"range": [element[4], element[5]]})
        return {"concat": parts}
    return {"concat": list(element)}  # br:spoof sets: ifname . MAC . IP; own: ifname . IP


# -- chains ------------------------------------------------------------------------------


def _log(prefix: str) -> list[dict[str, Any]]:
    return [
        {"limit": {"rate": LOG_RATE, "per": "second", "burst": 50, "burst_unit": "packets"}},
        {"log": {"prefix": prefix[:120] + " ", "group": LOG_GROUP}},
    ]


def log_chain(rule: str, action: str, direction: str = "in") -> ChainSpec:
    """The chain a logged rule jumps to with goto: log (rate-limited), then decide."""
    decide: Expr
    if action == "pass":
        decide = [
            {"mangle": {"key": _meta("mark"), "value": {"|": [_meta("mark"), PASS_MARK]}}},
            {"return": None},
        ]
    else:
        decide = [_verdict(action, direction)]
    rules = (_dump(_log(f"hw {action} {rule}")), _dump(decide))
    key = rule + action + ("" if direction == "in" else direction)
    return ChainSpec(f"l_{short(key)}", rules, comment=f"log {rule}")


def _decision(action: str, rule: str, log: bool, direction: str) -> Expr:
    if log:
        return [{"counter": None}, {"goto": {"target": log_chain(rule, action, direction).name}}]
    if action == "pass":
        return [
            {"counter": None},
            {"mangle": {"key": _meta("mark"), "value": {"|": [_meta("mark"), PASS_MARK]}}},
            {"return": None},
        ]
    return [{"counter": None}, _verdict(action, direction)]


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
                    _match(_payload(_ip(family), side), "@" + address_set_name(name, family))
                )
        for services in _services_exprs(item.services, family):
            yield [*addrs, *services, *decision]


def _lookup_rule(item: LookupRule, direction: str, shapes: Container[str]) -> Iterator[Expr]:
    decision = _decision(item.action, item.rules[0], False, direction)
    for shape in SHAPES:
        if shape not in shapes:
            continue  # an empty set: its lookup would cost every new connection for nothing
        family, kind = int(shape[0]), shape[1]
        ip = _ip(family)
        keys = [_payload(ip, "saddr"), _payload(ip, "daddr")]
        if kind == "s":
            keys = [_payload(ip, "saddr")]
        elif kind == "d":
            keys = [_payload(ip, "daddr")]
        proto: Expr = []
        if kind in "esd":
            proto = [_match(_meta("l4proto"), int(shape[2:]))]
            keys.append(_payload("th", "dport"))
        elif kind == "p":
            keys += [_meta("l4proto"), _payload("th", "dport")]
        elif kind == "i":
            keys.append(_payload("icmp" if family == 4 else "icmpv6", "type"))
        lookup = _match({"concat": keys}, "@" + block_set_name(item.block, shape))
        yield [*proto, lookup, *decision]


def render_policy_chain(chain: Chain, shapes_of: ShapesOf = all_shapes) -> list[ChainSpec]:
    """The policy chain, and the log chains its logged rules go to (their names do not
    depend on `shapes_of`)."""
    rules: list[str] = []
    extra: list[ChainSpec] = []
    direction = chain_direction(chain.name)
    for item in chain.items:
        if isinstance(item, MatchRule):
            rules.extend(_dump(e) for e in _match_rule(item, direction))
            if item.log:
                extra.append(log_chain(item.rule, item.action, direction))
        else:
            rules.extend(_dump(e) for e in _lookup_rule(item, direction, shapes_of(item.block)))
    return [ChainSpec(policy_chain_name(chain.name), tuple(rules), comment=chain.name), *extra]


def _tier_chain(chains: tuple[str, ...], passing: frozenset[str]) -> ChainSpec:
    rules: list[str] = []
    for name in chains:
        rules.append(_dump([{"jump": {"target": policy_chain_name(name)}}]))
        if name in passing:
            rules.append(
                _dump(
                    [
                        _match({"&": [_meta("mark"), PASS_MARK]}, PASS_MARK),
                        {
                            "mangle": {
                                "key": _meta("mark"),
                                "value": {"&": [_meta("mark"), PASS_MARK - 1]},
                            }
                        },
                        {"return": None},
                    ]
                )
            )
    key = json.dumps([chains, sorted(passing & set(chains))])
    return ChainSpec(f"t_{short(key)}", tuple(rules), comment="tier: " + ", ".join(chains))


def render_dispatch(
    ep: Endpoint, direction: str, passing: frozenset[str]
) -> tuple[ChainSpec, list[ChainSpec]]:
    """The dispatch chain of one endpoint direction and the tier chains it jumps to."""
    tiers = [
        _tier_chain(chains, passing)
        for chains in ep.dispatch(direction)  # type: ignore[arg-type]
        if chains
    ]
    rules = [_dump([{"jump": {"target": t.name}}]) for t in tiers]
    if ep.log_default:  # its own rule: a rate limit must never skip the verdict
        rules.append(_dump(_log(f"hw {ep.default} default {ep.tenant or 'provider'}")))
    rules.append(_dump([{"counter": None}, _verdict(ep.default, direction)]))
    name = f"d_{short(json.dumps(rules))}"
    return ChainSpec(name, tuple(rules), comment=f"dispatch {direction}"), tiers


def static_objects(options: Options) -> tuple[list[SetSpec], list[ChainSpec]]:
    if options.mode == "bridge":
        return _bridge_static(options)
    return _routed_static(options)


_EST = _match({"ct": {"key": "state"}}, ["established", "related"], "in")
_INVALID = _match({"ct": {"key": "state"}}, "invalid", "in")
_ND = [
    "nd-router-solicit",
    "nd-neighbor-solicit",
    "nd-neighbor-advert",
    "mld-listener-query",
    "mld-listener-report",
    "mld-listener-done",
    "mld2-listener-report",
]
# Logging is rate-limited, so a log never shares a rule with a verdict: once over the
# limit the rule stops matching, and a verdict in it would be skipped (fail open).
_UNKNOWN: list[Expr] = [_log("hw drop unknown-interface"), [{"counter": None}, {"drop": None}]]
_SPOOF_CHAIN: Expr = [{"counter": None}, *_log("hw drop anti-spoofing")]
_MISDIRECTED_CHAIN: Expr = [{"counter": None}, *_log("hw drop not-its-address")]
_REJECT: list[Expr] = [
    [_match(_meta("l4proto"), "tcp"), {"reject": {"type": "tcp reset"}}],
    [{"reject": {"type": "icmpx", "expr": "admin-prohibited"}}],
]


def _chains(*specs: tuple[str, list[Expr], tuple[str, int] | None]) -> list[ChainSpec]:
    return [ChainSpec(name, tuple(_dump(r) for r in rules), hook) for name, rules, hook in specs]


def _vmap(keys: list[dict[str, Any]], data: str) -> dict[str, Any]:
    """A verdict-map lookup of the concatenation of `keys` in map `data` ("@name")."""
    return {"vmap": {"key": {"concat": keys}, "data": data}}


def _routed_static(options: Options) -> tuple[list[SetSpec], list[ChainSpec]]:
    """Routed VM links: the inet hooks see the VM's own interface; dispatch by its name."""
    prefix = options.vm_prefix + "*"
    sets = [
        SetSpec("own4", ("ifname", "ipv4_addr")),
        SetSpec("own6", ("ifname", "ipv6_addr")),
        SetSpec("from4", ("ifname", "ether_addr", "ipv4_addr"), verdict_map=True),
        SetSpec("from6", ("ifname", "ether_addr", "ipv6_addr"), verdict_map=True),
        SetSpec("to4", ("ifname", "ipv4_addr"), verdict_map=True),
        SetSpec("to6", ("ifname", "ipv6_addr"), verdict_map=True),
        SetSpec("vm_ifaces", ("ifname",)),
    ]
    to_vm = _match(_meta("oifname"), prefix)
    # Anti-spoofing. Every packet from a VM: interface . source IP (a VM must not inject
    # into another's connections). A packet that is not part of an admitted connection: also
    # its MAC (interface . MAC . IP). The MAC costs about 1% of a core at a few thousand
    # connections/s (KERNEL_FACTS-style perf measurement), and on a routed link a foreign
    # source MAC on an admitted connection reaches no one: the host routes by IP.
    # An established packet goes to `established` first: one not from a VM is accepted on the
    # interface-name prefix alone, one from a VM by a hit in @own4/6 (a name load costs
    # ~0.07 us here, a missed lookup more than a hit, perf; cross-host half the packets
    # come from the underlay).
    not_from_vm = _match(_meta("iifname"), prefix, "!=")
    own = [
        [
            _match({"concat": [_meta("iifname"), _payload(ip, "saddr")]}, f"@own{f}"),
            {"accept": None},
        ]
        for f, ip in ((4, "ip"), (6, "ip6"))
    ]
    established = [[not_from_vm, {"accept": None}], *own, [{"goto": {"target": "spoofed"}}]]
    # A new connection from a VM: one lookup of interface . MAC . IP is both the
    # anti-spoofing check and the dispatch to the sender's chain. A miss from a VM interface
    # we know is spoofed; from one we do not know, fail closed.
    sending = [
        [_vmap([_meta("iifname"), _payload("ether", "saddr"), _payload(ip, "saddr")], f"@from{f}")]
        for f, ip in ((4, "ip"), (6, "ip6"))
    ]
    forward = [
        [_EST, {"goto": {"target": "established"}}],
        [_INVALID, {"drop": None}],
        [not_from_vm, {"goto": {"target": TO_VM}}],
        *sending,
        [_match(_meta("iifname"), "@vm_ifaces"), {"goto": {"target": "spoofed"}}],
        *_UNKNOWN,
    ]
    # The receiving end: one lookup of interface . destination IP dispatches to the
    # receiver's chain; a VM receives only its own addresses (block sets are clipped to
    # them: `Clip`), so a miss to a VM interface we know is misdirected.
    receiving = [
        [_match(_meta("oifname"), prefix, "!="), {"accept": None}],
        *(
            [_vmap([_meta("oifname"), _payload(ip, "daddr")], f"@to{f}")]
            for f, ip in ((4, "ip"), (6, "ip6"))
        ),
        [_match(_meta("oifname"), "@vm_ifaces"), {"goto": {"target": "misdirected"}}],
        *([to_vm, *rule] for rule in _UNKNOWN),
    ]
    host_in = [
        [_match(_meta("iifname"), prefix, "!="), {"accept": None}],
        [_EST, {"accept": None}],
        [_match(_payload("icmpv6", "type"), {"set": _ND}), {"accept": None}],
        [_match(_payload("udp", "dport"), {"set": [67, 547]}), {"accept": None}],
        [{"counter": None}, {"drop": None}],
    ]
    return sets, _chains(
        ("reject", _REJECT, None),
        ("spoofed", [_SPOOF_CHAIN, [{"drop": None}]], None),
        ("misdirected", [_MISDIRECTED_CHAIN, [{"drop": None}]], None),
        ("established", established, None),
        (TO_VM, receiving, None),
        ("forward", forward, ("forward", 0)),
        ("host_in", host_in, ("input", 0)),
    )


def _bridge_static(options: Options) -> tuple[list[SetSpec], list[ChainSpec]]:
    """Bridged VM ports with br_netfilter: the inet hooks see only the bridge.

    Anti-spoofing (and fail-closed for unknown ports) is done where the port is known: a
    `bridge hyperwall` prerouting chain. Since a port may send only from its own MAC, the
    inet chains dispatch on the Ethernet source (egress) and destination (ingress) MAC.
    `reject` from the inet hooks answers bridged packets only if the host routes the VM
    addresses via the bridge (measured: no bridge-family reject on this kernel).
    """
    prefix = options.vm_prefix + "*"
    sets = [
        SetSpec("br:spoof4", ("ifname", "ether_addr", "ipv4_addr")),
        SetSpec("br:spoof6", ("ifname", "ether_addr", "ipv6_addr")),
        SetSpec("egress_map", ("ether_addr",), verdict_map=True),
        SetSpec("ingress_map4", ("ipv4_addr",), verdict_map=True),
        SetSpec("ingress_map6", ("ipv6_addr",), verdict_map=True),
    ]
    own = {
        f: {"concat": [_meta("iifname"), _payload("ether", "saddr"), _payload(ip, "saddr")]}
        for f, ip in ((4, "ip"), (6, "ip6"))
    }
    arp_own = {
        "concat": [_meta("iifname"), _payload("ether", "saddr"), _payload("arp", "saddr ip")]
    }
    pre = [
        [_match(_meta("iifname"), prefix, "!="), {"accept": None}],
        [_match(arp_own, "@spoof4"), {"accept": None}],
        [_match(_payload("arp", "saddr ip"), "0.0.0.0"), {"accept": None}],  # ARP probe
        [_match(own[4], "@spoof4"), {"accept": None}],
        [_match(own[6], "@spoof6"), {"accept": None}],
        [
            _match(_payload("ip", "saddr"), "0.0.0.0"),
            _match(_payload("udp", "dport"), 67),
            {"accept": None},
        ],
        [
            _match(
                _payload("ip6", "saddr"), {"set": [{"prefix": {"addr": "fe80::", "len": 10}}, "::"]}
            ),
            _match(_payload("icmpv6", "type"), {"set": _ND}),
            {"accept": None},
        ],
        _SPOOF_CHAIN,
        [{"drop": None}],
    ]
    nd = [_match(_payload("icmpv6", "type"), {"set": _ND}), {"accept": None}]
    forward = [nd, [_EST, {"accept": None}], [_INVALID, {"drop": None}]]
    forward.append([{"vmap": {"key": _payload("ether", "saddr"), "data": "@egress_map"}}])
    forward.append([{"goto": {"target": TO_VM}}])
    # Ingress by destination address, not MAC: a packet the host routes into the bridge
    # still carries the host's MAC at the forward hook.
    receiving: list[Expr] = [
        [{"vmap": {"key": _payload("ip", "daddr"), "data": "@ingress_map4"}}],
        [{"vmap": {"key": _payload("ip6", "daddr"), "data": "@ingress_map6"}}],
        [{"accept": None}],
    ]
    return sets, _chains(
        ("reject", _REJECT, None),
        (TO_VM, receiving, None),
        ("forward", forward, ("forward", 0)),
        ("br:pre", pre, ("prerouting", -200)),
    )


def passing_chains(program: HostProgram) -> frozenset[str]:
    return frozenset(
        name for name, c in program.chains.items() if any(i.action == "pass" for i in c.items)
    )


def render_endpoint(
    ep: Endpoint, options: Options, passing: frozenset[str]
) -> tuple[list[ChainSpec], dict[str, set[Element]]]:
    """Chains an endpoint needs, and its elements in the anti-spoofing sets and dispatch maps."""
    ifname = options.ifname(ep)
    chains: list[ChainSpec] = []
    dispatch = {}
    for direction in ("out", "in"):
        d, tiers = render_dispatch(ep, direction, passing)
        chains += [*tiers, d]
        dispatch[direction] = d.name
    elements: dict[str, set[Element]] = {}

    def add(table: str, *element: str) -> None:
        elements.setdefault(table, set()).add(element)

    if options.mode == "bridge":
        add("egress_map", ep.mac, dispatch["out"])
        for ip in ep.ips:
            family = 6 if ":" in ip else 4
            add(f"ingress_map{family}", ip, dispatch["in"])
            add(f"br:spoof{family}", ifname, ep.mac, ip)
        return chains, elements
    add("vm_ifaces", ifname)
    for ip in ep.ips:
        family = 6 if ":" in ip else 4
        add(f"own{family}", ifname, ip)
        add(f"from{family}", ifname, ep.mac, ip, dispatch["out"])
        add(f"to{family}", ifname, ip, dispatch["in"])
    return chains, elements


def render_program(program: HostProgram, options: Options) -> TableState:
    """The whole table for `program` (full syncs; the backend renders deltas piecewise)."""
    state = TableState()
    sets, chains = static_objects(options)
    for spec in sets:
        state.put_set(spec, set())
    for s in program.address_sets.values():
        for spec, elements in render_address_set(s):
            state.put_set(spec, elements)
    filled: dict[str, set[str]] = {}
    local = local_addresses(program) if options.clip else None
    for b in program.block_sets.values():
        shapes = filled[b.name] = set()
        for spec, elements in render_block_set(b, local):
            state.put_set(spec, elements)
            if elements:
                shapes.add(block_shape(spec.name))
    for chain in program.chains.values():
        for c in render_policy_chain(chain, lambda block: filled.get(block, ())):
            state.chains[c.name] = c
    passing = passing_chains(program)
    for ep in program.endpoints.values():
        ep_chains, ep_elements = render_endpoint(ep, options, passing)
        for c in ep_chains:
            state.chains[c.name] = c
        for table, elements in ep_elements.items():
            state.elements[table] |= elements
    for c in chains:
        state.chains[c.name] = c
    return state
