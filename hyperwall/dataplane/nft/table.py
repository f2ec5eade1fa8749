"""The vocabulary of our nftables table (`inet hyperwall`): its objects as comparable values
(`SetSpec`, `ChainSpec`, `TableState`, `Element`) and how they are named. Pure.

Everything that speaks about the table uses these: the renderers (`nft.render` and the
modules it composes), `nft.plan` (the transaction), `nft.json_text` and `nft.netlink` (the
two encodings), `nft.readback` (the kernel's listing) and `nft.kernel` (which sends them).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

TABLE = "hyperwall"
FAMILY = "inet"
TO_VM = "to_vm"  # the receiving end's checks; an egress allow continues there
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

Element = tuple[Any, ...]


def short(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class SetSpec:
    name: str
    type: tuple[str, ...]
    interval: bool = False
    verdict_map: bool = False
    counter: bool = False  # a counter per element (block sets: per-rule hits, `nft.hits`)


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


def address_text(family: int, value: int) -> str:
    if family == 4:  # hot for 100k-element sets: no ipaddress objects
        return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"
    return str(ipaddress.IPv6Address(value))


# -- names -------------------------------------------------------------------------------


def address_set_name(name: str, family: int) -> str:
    return f"a_{short(name)}_{family}"


def block_set_name(name: str, shape: str) -> str:
    return f"k_{short(name)}_{shape}"


def block_set_shape(set_name: str) -> str:
    """The shape of a block set from its name (`block_set_name`): "4e6", "6p", ..."""
    return set_name.rsplit("_", 1)[1]


def policy_chain_name(name: str) -> str:
    return f"p_{short(name)}"
