"""The text libnftables reads: commands as JSON with pre-encoded parts spliced in. Pure.

Counterpart of `nft.plan` (which builds the commands) and `nft.kernel` (which sends the
text); `nft.netlink` is the other encoding, of a fresh table's big sets. A full load of
100,000 rules is some 240,000 set elements; building a Python object per element, part and
address and then running `json.dumps` over them cost more Python time than the kernel
transaction itself. So the bulky parts are written as JSON text directly:

- set elements, by an encoder per set (`element_encoder`), one f-string per element, with
  the text of each address cached (hosts repeat the same few addresses a lot);
- rule expressions, which the renderers already hold as canonical JSON text.

They travel inside the command dicts as `Raw` values, which `encode` splices in as they are.
`element_json` is the readable reference: every encoder's text parses to exactly what it
returns (tests/dataplane/nft/test_json_text.py), and the kernel reads both back the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hyperwall.dataplane.nft.table import Element, SetSpec, address_text, block_set_shape


@dataclass(frozen=True, slots=True)
class Raw:
    """JSON text to put into a command as it is (not a str: `json.dumps` refuses it)."""

    text: str


def encode(commands: Iterable[dict[str, Any]]) -> str:
    """The transaction `{"nftables": [...]}` as JSON text, `Raw` parts spliced in."""
    return '{"nftables":[' + ",".join(_value(c) for c in commands) + "]}"


def _value(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_value(v) for v in value) + "]"
    return json.dumps(value)


# -- elements ----------------------------------------------------------------------------


class _Texts(dict[int, str]):
    """Address -> its JSON string literal, for one family; filled on first use, bounded."""

    LIMIT = 1 << 16

    def __init__(self, family: int) -> None:
        super().__init__()
        self.family = family

    def __missing__(self, value: int) -> str:
        if len(self) >= self.LIMIT:
            self.clear()
        text = self[value] = f'"{address_text(self.family, value)}"'
        return text


_TEXTS = {4: _Texts(4), 6: _Texts(6)}
_q = json.dumps


def elements_raw(spec: SetSpec, elements: Iterable[Element]) -> Raw | None:
    """The JSON list of `elements` in `spec`'s nftables form; None if there are none.

    The exact block shapes (nearly all elements of a big host) are written by a list
    comprehension of their own; the rest one `element_encoder` call each."""
    if spec.name[:2] == "k_" and not spec.interval:
        texts = _exact_texts(spec, elements)
    else:
        texts = list(map(element_encoder(spec), elements))
    return Raw(f"[{','.join(texts)}]") if texts else None


def _exact_texts(spec: SetSpec, elements: Iterable[Element]) -> list[str]:
    """Elements of an exact block set: addresses and port (the protocol is the set's)."""
    a, kind = _TEXTS[4 if spec.type[0] == "ipv4_addr" else 6], block_set_shape(spec.name)[1]
    if kind == "e":
        return [f'{{"concat":[{a[s]},{a[d]},{pt}]}}' for s, _, d, _, _, pt, _ in elements]
    if kind == "s":
        return [f'{{"concat":[{a[s]},{pt}]}}' for s, _, _, _, _, pt, _ in elements]
    return [f'{{"concat":[{a[d]},{pt}]}}' for _, _, d, _, _, pt, _ in elements]


def _address(family: int) -> Callable[[int], str]:
    """The JSON string literal of an address of `family` (cached)."""
    return _TEXTS[family].__getitem__


def _ranged(addr: Callable[[int], str]) -> Callable[[int, int], str]:
    def text(low: int, high: int) -> str:
        if low == high:
            return addr(low)
        return f'{{"range":[{addr(low)},{addr(high)}]}}'

    return text


def element_encoder(spec: SetSpec) -> Callable[[Element], str]:
    """Writes one element of `spec` (in the renderers' canonical form) as nftables JSON text."""
    kind = spec.name[:2]
    if spec.verdict_map:
        return lambda e: (
            f'[{_q(e[0]) if len(e) == 2 else _concat(e[:-1])},{{"jump":{{"target":{_q(e[-1])}}}}}]'
        )
    if spec.type == ("ifname",):
        return lambda e: _q(e[0])
    family = 4 if spec.type[0] == "ipv4_addr" else 6
    addr = _address(family)
    ranged = _ranged(addr)
    if kind == "a_":
        return lambda e: ranged(e[0], e[1])
    if kind == "k_" and not spec.interval:
        return lambda e: _exact_texts(spec, [e])[0]
    if kind == "k_":
        if len(spec.type) == 4:
            return lambda e: (
                f'{{"concat":[{ranged(e[0], e[1])},{ranged(e[2], e[3])},{e[4]},'
                f'{{"range":[{e[5]},{e[6]}]}}]}}'
            )
        if len(spec.type) == 3:
            return lambda e: (
                f'{{"concat":[{ranged(e[0], e[1])},{ranged(e[2], e[3])},'
                f'{{"range":[{e[4]},{e[5]}]}}]}}'
            )
        return lambda e: f'{{"concat":[{ranged(e[0], e[1])},{ranged(e[2], e[3])}]}}'
    return _concat  # br:spoof sets: ifname . MAC . IP; own sets: ifname . IP


def _concat(values: tuple[Any, ...]) -> str:
    return '{"concat":[' + ",".join(map(_q, values)) + "]}"


# -- the readable reference ----------------------------------------------------------------


def _address_range(family: int, low: int, high: int) -> Any:
    if low == high:
        return address_text(family, low)
    return {"range": [address_text(family, low), address_text(family, high)]}


def element_json(spec: SetSpec, element: Element) -> Any:
    """An element of our canonical form as nftables JSON: the readable reference of
    `element_encoder`, which writes the same as text without the objects. Protocols
    are numbers: nft looks a name up in /etc/protocols for every element."""
    kind = spec.name[:2]
    if spec.verdict_map:
        key = element[0] if len(element) == 2 else {"concat": list(element[:-1])}
        return [key, {"jump": {"target": element[-1]}}]
    if spec.type == ("ifname",):
        return element[0]
    if kind == "a_":
        family = 4 if spec.type[0] == "ipv4_addr" else 6
        return _address_range(family, element[0], element[1])
    if kind == "k_" and not spec.interval:  # exact shapes: plain values
        family = 4 if spec.type[0] == "ipv4_addr" else 6
        kind = block_set_shape(spec.name)[1]  # the protocol is the set's (table.SHAPES)
        addrs = {"e": [element[0], element[2]], "s": [element[0]], "d": [element[2]]}[kind]
        return {"concat": [*(address_text(family, a) for a in addrs), element[5]]}
    if kind == "k_":
        family = 4 if spec.type[0] == "ipv4_addr" else 6
        parts = [
            _address_range(family, element[0], element[1]),
            _address_range(family, element[2], element[3]),
        ]
        if len(element) == 7:
            parts.append(element[4])
            parts.append({"range": [element[5], element[6]]})
        elif len(element) == 6:
            parts.append({"range": [element[4], element[5]]})
        return {"concat": parts}
    return {"concat": list(element)}  # br:spoof sets: ifname . MAC . IP; own: ifname . IP
