"""Block sets: a compiled block's elements shaped into nft sets (`split_block`), each first
clipped to the host's own addresses (`Clip`). Pure.

Counterpart of `compiler.program.BlockSet` (the elements: family, source range, destination
range, protocol, port or ICMP type range, rule id) and `nft.table.SHAPES` (the sets per
block: exact-match hash sets for the common single-address single-port elements, interval
sets for the rest). The hot path of a full load: most of its time is here.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hyperwall.compiler.intervals import V4_MAX, V6_MAX
from hyperwall.compiler.program import BlockSet, HostProgram
from hyperwall.dataplane.nft.table import (
    EXACT_PROTOS,
    SHAPES,
    Element,
    SetSpec,
    block_set_name,
    block_set_shape,
)

EXPAND = 64  # a block element over small address ranges becomes this many exact ones at most


_FULL = {4: V4_MAX, 6: V6_MAX}
_EXACT = {(f, p): (f"{f}e{p}", f"{f}s{p}", f"{f}d{p}") for f in (4, 6) for p in EXACT_PROTOS}


def split_element(element: tuple[Any, ...], clip: Clip | None = None) -> list[tuple[str, Element]]:
    """One block element's values per set shape (without the rule id): `split_block` of one."""
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
        specs.append(SetSpec(block_set_name(name, shape), types, kind not in "esd", counter=True))
    return specs


def render_block_set(b: BlockSet, local: Local | None = None) -> list[tuple[SetSpec, set[Element]]]:
    by_shape = split_block(b.elements, block_clip(b.name, local))
    return [
        (spec, by_shape.get(block_set_shape(spec.name), set())) for spec in block_set_specs(b.name)
    ]
