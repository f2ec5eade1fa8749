"""Parses `nft -j list table inet hyperwall` output back into a `TableState`. Pure.

Elements come back normalised (single addresses, prefixes, ranges, names for protocols and
ICMP types); they are turned into the canonical tuples the renderers produce, so actual
and desired compare as values. Chains are compared by the digest every rule carries as comment.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hyperwall.dataplane.nft.table import (
    SHAPES,
    ChainSpec,
    Element,
    SetSpec,
    TableState,
    block_set_shape,
)
from hyperwall.policy.ports import ICMP_TYPES, ICMPV6_TYPES, PROTO_NUMBERS

_NFT_ICMP_EXTRA = {
    "info-request": 15,
    "info-reply": 16,
    "address-mask-request": 17,
    "address-mask-reply": 18,
}
_NFT_ICMPV6_EXTRA = {
    "mld-listener-reduction": 132,
    "router-renumbering": 138,
    "ind-neighbor-solicit": 141,
    "ind-neighbor-advert": 142,
}


class ReadbackError(ValueError):
    """The kernel's table holds something this version does not understand."""


class TornListing(ReadbackError):
    """A set was listed while the kernel resized its hash table: list it again.

    nft dumps a set in several netlink messages, each skipping the elements the earlier ones
    returned by position; when the kernel rehashes the set in between (it grows a hash set
    in the background after big inserts) the order changes, and the dump repeats some
    elements and skips as many others (measured: 12,000 elements listed right after they
    were added: 12,000 entries, 10,706 distinct). Repeats are the sign."""


class _Addresses(dict[str, int]):
    """Address text -> its number; filled on first use, bounded (a big table repeats the
    same few addresses in most of its elements, and `ipaddress` is slow)."""

    LIMIT = 1 << 16

    def __missing__(self, text: str) -> int:
        if len(self) >= self.LIMIT:
            self.clear()
        n = self[text] = int(ipaddress.ip_address(text))
        return n


_ADDRESSES = _Addresses()


def _interval(value: Any) -> tuple[int, int]:
    if isinstance(value, str):
        n = _ADDRESSES[value]
        return n, n
    if "prefix" in value:
        net = ipaddress.ip_network(f"{value['prefix']['addr']}/{value['prefix']['len']}")
        return int(net.network_address), int(net.broadcast_address)
    if "range" in value:
        low, high = value["range"]
        return int(ipaddress.ip_address(low)), int(ipaddress.ip_address(high))
    raise ReadbackError(f"unexpected address element {value!r}")


def _number(value: Any, names: dict[str, int]) -> tuple[int, int]:
    def one(v: Any) -> int:
        if isinstance(v, int):
            return v
        if isinstance(v, str) and v in names:
            return names[v]
        if isinstance(v, str) and v.isdigit():
            return int(v)
        raise ReadbackError(f"unexpected value {v!r}")

    if isinstance(value, dict) and "range" in value:
        low, high = value["range"]
        return one(low), one(high)
    n = one(value)
    return n, n


def element(spec: SetSpec, raw: Any) -> Element:
    """One listed element of set `spec` (bare, or wrapped with its counter) in the
    canonical form the renderers produce."""
    return _element(spec, raw)


def _element(spec: SetSpec, raw: Any) -> Element:
    if isinstance(raw, dict) and "elem" in raw:
        raw = raw["elem"]["val"]
    if spec.verdict_map:
        key, verdict = raw
        ((_kind, body),) = verdict.items()
        keys = key["concat"] if isinstance(key, dict) else [key]
        return (*(_key(t, k) for t, k in zip(spec.type, keys, strict=True)), body["target"])
    if spec.type == ("ifname",):
        return (raw,)
    if spec.name.startswith("a_"):
        return _interval(raw)
    if spec.name.startswith("k_") and not spec.interval:
        return _exact(spec, raw["concat"])
    if spec.name.startswith("k_"):
        parts = raw["concat"]
        out: list[int] = [*_interval(parts[0]), *_interval(parts[1])]
        if len(spec.type) == 4:
            out.append(_number(parts[2], PROTO_NUMBERS)[0])
            out.extend(_number(parts[3], {}))
        elif len(spec.type) == 3:
            names = (
                {**ICMP_TYPES, **_NFT_ICMP_EXTRA}
                if spec.type[2] == "icmp_type"
                else {**ICMPV6_TYPES, **_NFT_ICMPV6_EXTRA}
            )
            out.extend(_number(parts[2], names))
        return tuple(out)
    return tuple(_key(t, k) for t, k in zip(spec.type, raw["concat"], strict=True))


def _key(kind: str, value: str) -> str:
    """One field of an endpoint set's key (own, br:spoof, the dispatch maps) as rendered."""
    if kind == "ether_addr":
        return value.lower()
    if kind in ("ipv4_addr", "ipv6_addr"):
        return str(ipaddress.ip_address(value))
    return value


def _exact(spec: SetSpec, parts: list[Any]) -> Element:
    """An exact-shape block element back in canonical form: addresses and port from the
    element, the protocol from the set's shape (`table.SHAPES`)."""
    family_max = 2**32 - 1 if spec.type[0] == "ipv4_addr" else 2**128 - 1
    shape = block_set_shape(spec.name)
    kind, proto = shape[1], int(shape[2:])
    first = _interval(parts[0])
    if kind == "e":
        src, dst, rest = first, _interval(parts[1]), parts[2:]
    elif kind == "s":
        src, dst, rest = first, (0, family_max), parts[1:]
    else:
        src, dst, rest = (0, family_max), first, parts[1:]
    port = _number(rest[0], {})
    return (*src, *dst, proto, *port)


def parse_table(
    listing: dict[str, Any], prefix: str = "", state: TableState | None = None
) -> TableState:
    """Add the objects of one table listing to `state`, their names prefixed by `prefix`."""
    state = state if state is not None else TableState()
    rules: dict[str, list[str]] = {}
    hooks: dict[str, tuple[str, int] | None] = {}
    for entry in listing.get("nftables", []):
        if "set" in entry or "map" in entry:
            raw = entry.get("set") or entry["map"]
            types = raw["type"] if isinstance(raw["type"], list) else [raw["type"]]
            spec = SetSpec(
                prefix + raw["name"],
                tuple(types),
                "interval" in raw.get("flags", []),
                "map" in raw,
                any("counter" in s for s in raw.get("stmt", ())),
            )
            if spec.name.startswith("k_") and block_set_shape(spec.name) not in SHAPES:
                # an earlier version's block set: never wanted, so deleted whole by the
                # sync; its elements need not (and may not) parse
                state.put_set(spec, set())
                continue
            listed = raw.get("elem", [])
            elements = {_element(spec, e) for e in listed}
            if len(elements) != len(listed):
                raise TornListing(f"set {spec.name}: {len(listed) - len(elements)} repeats")
            state.put_set(spec, elements)
        elif "chain" in entry:
            raw = entry["chain"]
            hooks[prefix + raw["name"]] = (raw["hook"], raw["prio"]) if "hook" in raw else None
            rules.setdefault(prefix + raw["name"], [])
        elif "rule" in entry:
            raw = entry["rule"]
            rules.setdefault(prefix + raw["chain"], []).append(raw.get("comment", ""))
    for name, comments in rules.items():
        digest = comments[0] if comments and len(set(comments)) == 1 else ""
        state.chains[name] = ChainSpec(
            name, tuple("" for _ in comments), hooks.get(name), known_digest=digest
        )
    return state
