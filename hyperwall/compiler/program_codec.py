"""Host programs and program deltas as JSON, losslessly: what the manager sends an agent.

`serialize.program_to_json` is for people (addresses as text, rules by name); this module is
for machines: every value round-trips (`program_from_wire(program_to_wire(p)) == p`, same for
deltas), addresses stay integers (IPv6 too: JSON numbers of any size, as Python's json
reads them), and decoding checks every shape and type, raising `WireError` with the path of
the first bad value, so an agent never applies a half-understood program.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

from hyperwall.compiler.delta import ElementChange, ProgramDelta
from hyperwall.compiler.intervals import Interval
from hyperwall.compiler.program import (
    AddressSet,
    BlockElement,
    BlockSet,
    Chain,
    ChainItem,
    Endpoint,
    HostProgram,
    LookupRule,
    MatchRule,
)
from hyperwall.compiler.serialize import endpoint_json
from hyperwall.policy.ports import PortMatch

T = TypeVar("T")
ACTIONS = ("allow", "drop", "reject", "pass")
VERDICTS = ("allow", "drop", "reject")
PROTOS = ("any", "tcp", "udp", "sctp", "icmp", "icmpv6")


class WireError(ValueError):
    """A program or delta that does not decode: `path` names the bad value."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path or '(top)'}: {message}")
        self.path = path


# -- encoding -------------------------------------------------------------------------


def _services(services: tuple[PortMatch, ...] | None) -> list[list[Any]] | None:
    if services is None:
        return None
    return [[s.proto, s.low, s.high, s.any_value] for s in services]


def _item(item: ChainItem) -> list[Any]:
    if isinstance(item, MatchRule):
        return ["m", item.rule, item.action, item.log, item.src, item.dst, _services(item.services)]
    return ["l", item.block, item.action, list(item.rules)]


def _endpoint(ep: Endpoint) -> dict[str, Any]:
    return endpoint_json(ep, lambda tiers: [list(t) for t in tiers])


def _flat(intervals: tuple[Interval, ...]) -> list[int]:
    return [bound for interval in intervals for bound in interval]


def _aset(s: AddressSet) -> dict[str, Any]:
    return {"v4": _flat(s.v4), "v6": _flat(s.v6)}


def _elements(elements: Iterable[Any]) -> list[list[Any]]:
    return [list(e) for e in sorted(elements)]


def program_to_wire(program: HostProgram) -> dict[str, Any]:
    return {
        "host": program.host,
        "addressSets": {k: _aset(s) for k, s in program.address_sets.items()},
        "blockSets": {k: _elements(b.elements) for k, b in program.block_sets.items()},
        "chains": {k: [_item(i) for i in c.items] for k, c in program.chains.items()},
        "endpoints": {k: _endpoint(e) for k, e in program.endpoints.items()},
    }


def _change(c: ElementChange) -> dict[str, Any]:
    return {"name": c.name, "added": _elements(c.added), "removed": _elements(c.removed)}


def _address_elements(elements: Iterable[tuple[int, Interval]]) -> list[list[Any]]:
    return [[family, [low, high]] for family, (low, high) in sorted(elements)]


def _address_change(c: ElementChange) -> dict[str, Any]:
    return {
        "name": c.name,
        "added": _address_elements(c.added),
        "removed": _address_elements(c.removed),
    }


def delta_to_wire(d: ProgramDelta) -> dict[str, Any]:
    return {
        "host": d.host,
        "addressSetsPut": {s.name: _aset(s) for s in d.address_sets_put},
        "addressSetsDelete": list(d.address_sets_delete),
        "addressElements": [_address_change(c) for c in d.address_elements],
        "blockSetsPut": {b.name: _elements(b.elements) for b in d.block_sets_put},
        "blockSetsDelete": list(d.block_sets_delete),
        "blockElements": [_change(c) for c in d.block_elements],
        "chainsPut": {c.name: [_item(i) for i in c.items] for c in d.chains_put},
        "chainsDelete": list(d.chains_delete),
        "endpointsPut": {e.key: _endpoint(e) for e in d.endpoints_put},
        "endpointsDelete": list(d.endpoints_delete),
    }


# -- decoding -------------------------------------------------------------------------


def _fail(path: str, message: str) -> WireError:
    return WireError(path, message)


def _obj(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, "expected an object")
    return cast(dict[str, Any], value)


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(path, "expected a list")
    return value


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _fail(path, "expected a string")
    return value


def _opt_str(value: Any, path: str) -> str | None:
    return None if value is None else _str(value, path)


def _int(value: Any, path: str, low: int = 0, high: int = (1 << 128) - 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _fail(path, f"expected an integer in [{low}, {high}]")
    return value


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(path, "expected true or false")
    return value


def _choice(value: Any, path: str, choices: tuple[str, ...]) -> Any:
    if value not in choices:
        raise _fail(path, "expected one of " + ", ".join(choices))
    return value


def _field(obj: dict[str, Any], key: str, path: str) -> Any:
    if key not in obj:
        raise _fail(f"{path}.{key}", "missing")
    return obj[key]


def _named(value: Any, path: str, decode: Callable[[str, Any, str], T]) -> list[T]:
    return [decode(k, v, f"{path}.{k}") for k, v in _obj(value, path).items()]


def _names(value: Any, path: str) -> tuple[str, ...]:
    return tuple(_str(v, f"{path}[{i}]") for i, v in enumerate(_list(value, path)))


def _intervals(value: Any, path: str, family: int) -> tuple[Interval, ...]:
    """A flat list [low, high, low, high, ...] of one family's interval bounds."""
    top = (1 << 32) - 1 if family == 4 else (1 << 128) - 1
    bounds = _list(value, path)
    if len(bounds) % 2 or not all(type(b) is int for b in bounds):
        raise _fail(path, "expected a flat list of integer bounds [low, high, ...]")
    if bounds and (min(bounds) < 0 or max(bounds) > top):
        raise _fail(path, f"expected bounds in [0, {top}]")
    it = iter(bounds)
    return tuple(zip(it, it, strict=True))


def _address_set(name: str, value: Any, path: str) -> AddressSet:
    obj = _obj(value, path)
    v4 = _intervals(_field(obj, "v4", path), f"{path}.v4", 4)
    v6 = _intervals(_field(obj, "v6", path), f"{path}.v6", 6)
    return AddressSet(name, v4, v6)


def _block_element(value: Any, path: str) -> BlockElement:
    if not isinstance(value, list) or len(value) != 9:
        raise _fail(
            path,
            "expected [family, src low, src high, dst low, dst high, proto, "
            "port low, port high, rule]",
        )
    family = _int(value[0], path, 4, 6)
    numbers = [_int(v, f"{path}[{i + 1}]") for i, v in enumerate(value[1:8])]
    sl, sh, dl, dh, proto, low, high = numbers
    return (family, sl, sh, dl, dh, proto, low, high, _str(value[8], f"{path}[8]"))


def _block_elements(value: Any, path: str) -> frozenset[BlockElement]:
    return frozenset(_block_element(v, f"{path}[{i}]") for i, v in enumerate(_list(value, path)))


def _block_set(name: str, value: Any, path: str) -> BlockSet:
    return BlockSet(name, _block_elements(value, path))


def _port_match(value: Any, path: str) -> PortMatch:
    if not isinstance(value, list) or len(value) != 4:
        raise _fail(path, "expected [proto, low, high, any]")
    proto = _choice(value[0], f"{path}[0]", PROTOS)
    low, high = _int(value[1], path, 0, 65535), _int(value[2], path, 0, 65535)
    return PortMatch(proto, low, high, _bool(value[3], f"{path}[3]"))


def _chain_item(value: Any, path: str) -> ChainItem:
    items = _list(value, path)
    if items[:1] == ["m"] and len(items) == 7:
        _, rule, action, log, src, dst, services = items
        decoded = (
            None
            if services is None
            else tuple(
                _port_match(s, f"{path}[6][{i}]") for i, s in enumerate(_list(services, path))
            )
        )
        return MatchRule(
            _str(rule, f"{path}[1]"),
            _choice(action, f"{path}[2]", ACTIONS),
            _bool(log, f"{path}[3]"),
            _opt_str(src, f"{path}[4]"),
            _opt_str(dst, f"{path}[5]"),
            decoded,
        )
    if items[:1] == ["l"] and len(items) == 4:
        _, block, action, rules = items
        return LookupRule(
            _str(block, f"{path}[1]"),
            _choice(action, f"{path}[2]", ACTIONS),
            _names(rules, f"{path}[3]"),
        )
    raise _fail(
        path, 'expected ["m", rule, action, log, src, dst, services] or ["l", block, action, rules]'
    )


def _chain(name: str, value: Any, path: str) -> Chain:
    items = _list(value, path)
    return Chain(name, tuple(_chain_item(v, f"{path}[{i}]") for i, v in enumerate(items)))


def _tiers(value: Any, path: str) -> tuple[tuple[str, ...], ...]:
    return tuple(_names(t, f"{path}[{i}]") for i, t in enumerate(_list(value, path)))


def _endpoint_of(key: str, value: Any, path: str) -> Endpoint:
    obj = _obj(value, path)

    def get(name: str) -> Any:
        return _field(obj, name, path)

    return Endpoint(
        key,
        _str(get("workload"), f"{path}.workload"),
        _str(get("interface"), f"{path}.interface"),
        _opt_str(get("tenant"), f"{path}.tenant"),
        _str(get("mac"), f"{path}.mac"),
        _names(get("ips"), f"{path}.ips"),
        _tiers(get("ingress"), f"{path}.ingress"),
        _tiers(get("egress"), f"{path}.egress"),
        _choice(get("default"), f"{path}.default", VERDICTS),
        _bool(get("logDefault"), f"{path}.logDefault"),
    )


def program_from_wire(value: Any) -> HostProgram:
    """Decode `program_to_wire`'s output; WireError on anything else."""
    obj = _obj(value, "")
    sets = _named(_field(obj, "addressSets", ""), "addressSets", _address_set)
    blocks = _named(_field(obj, "blockSets", ""), "blockSets", _block_set)
    chains = _named(_field(obj, "chains", ""), "chains", _chain)
    endpoints = _named(_field(obj, "endpoints", ""), "endpoints", _endpoint_of)
    return HostProgram(
        _str(_field(obj, "host", ""), "host"),
        {s.name: s for s in sets},
        {b.name: b for b in blocks},
        {c.name: c for c in chains},
        {e.key: e for e in endpoints},
    )


def _decode_address_change(value: Any, path: str) -> ElementChange:
    obj = _obj(value, path)
    name = _str(_field(obj, "name", path), f"{path}.name")

    def elements(key: str) -> frozenset[tuple[int, Interval]]:
        out = []
        for i, v in enumerate(_list(_field(obj, key, path), f"{path}.{key}")):
            p = f"{path}.{key}[{i}]"
            if (
                not isinstance(v, list)
                or len(v) != 2
                or not isinstance(v[1], list)
                or len(v[1]) != 2
            ):
                raise _fail(p, "expected [family, [low, high]]")
            family = _int(v[0], p, 4, 6)
            out.append((family, _intervals(v[1], p, family)[0]))
        return frozenset(out)

    return ElementChange(name, elements("added"), elements("removed"))


def _block_change(value: Any, path: str) -> ElementChange:
    obj = _obj(value, path)
    return ElementChange(
        _str(_field(obj, "name", path), f"{path}.name"),
        _block_elements(_field(obj, "added", path), f"{path}.added"),
        _block_elements(_field(obj, "removed", path), f"{path}.removed"),
    )


def delta_from_wire(value: Any) -> ProgramDelta:
    """Decode `delta_to_wire`'s output; WireError on anything else."""
    obj = _obj(value, "")

    def get(key: str) -> Any:
        return _field(obj, key, "")

    def each(key: str, decode: Callable[[Any, str], T]) -> tuple[T, ...]:
        return tuple(decode(v, f"{key}[{i}]") for i, v in enumerate(_list(get(key), key)))

    return ProgramDelta(
        address_sets_put=tuple(_named(get("addressSetsPut"), "addressSetsPut", _address_set)),
        address_sets_delete=_names(get("addressSetsDelete"), "addressSetsDelete"),
        address_elements=each("addressElements", _decode_address_change),
        block_sets_put=tuple(_named(get("blockSetsPut"), "blockSetsPut", _block_set)),
        block_sets_delete=_names(get("blockSetsDelete"), "blockSetsDelete"),
        block_elements=each("blockElements", _block_change),
        chains_put=tuple(_named(get("chainsPut"), "chainsPut", _chain)),
        chains_delete=_names(get("chainsDelete"), "chainsDelete"),
        endpoints_put=tuple(_named(get("endpointsPut"), "endpointsPut", _endpoint_of)),
        endpoints_delete=_names(get("endpointsDelete"), "endpointsDelete"),
        host=_str(get("host"), "host"),
    )
