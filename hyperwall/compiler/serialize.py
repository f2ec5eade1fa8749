"""A host program as JSON-ready data and as readable text (`hyperwall compile`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hyperwall.compiler.digest import digest_text, program_digest
from hyperwall.compiler.intervals import format_interval
from hyperwall.compiler.program import (
    AddressSet,
    BlockElement,
    Chain,
    Endpoint,
    HostProgram,
    LookupRule,
    MatchRule,
)
from hyperwall.policy.model import TIER_NAMES

_PROTO_NAMES = {0: "any", 1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}


def _addresses(s: AddressSet) -> list[str]:
    return [format_interval(4, i) for i in s.v4] + [format_interval(6, i) for i in s.v6]


def _element(e: BlockElement) -> dict[str, object]:
    family, sl, sh, dl, dh, proto, low, high, rule = e
    return {
        "src": format_interval(family, (sl, sh)),
        "dst": format_interval(family, (dl, dh)),
        "proto": _PROTO_NAMES.get(proto, str(proto)),
        "ports": f"{low}-{high}" if low != high else str(low),
        "rule": rule,
    }


def _item(item: MatchRule | LookupRule) -> dict[str, object]:
    if isinstance(item, MatchRule):
        return {
            "type": "match",
            "rule": item.rule,
            "action": item.action,
            "log": item.log,
            "src": item.src,
            "dst": item.dst,
            "services": None if item.services is None else [str(s) for s in item.services],
        }
    return {"type": "lookup", "block": item.block, "action": item.action, "rules": list(item.rules)}


def _dispatch(tiers: tuple[tuple[str, ...], ...]) -> dict[str, list[str]]:
    return {TIER_NAMES[i]: list(chains) for i, chains in enumerate(tiers) if chains}


def endpoint_json(
    ep: Endpoint, dispatch: Callable[[tuple[tuple[str, ...], ...]], object] = _dispatch
) -> dict[str, Any]:
    """An endpoint as JSON; `dispatch` writes its per-tier chain lists (named tiers here,
    plain lists on the wire: `program_codec`)."""
    return {
        "workload": ep.workload,
        "interface": ep.interface,
        "tenant": ep.tenant,
        "mac": ep.mac,
        "ips": list(ep.ips),
        "ingress": dispatch(ep.ingress),
        "egress": dispatch(ep.egress),
        "default": ep.default,
        "logDefault": ep.log_default,
    }


def _chain(chain: Chain) -> list[dict[str, object]]:
    return [_item(i) for i in chain.items]


def program_to_json(program: HostProgram) -> dict[str, object]:
    return {
        "host": program.host,
        "size": program.size(),
        "endpoints": {k: endpoint_json(e) for k, e in program.endpoints.items()},
        "chains": {k: _chain(c) for k, c in program.chains.items()},
        "addressSets": {k: _addresses(s) for k, s in program.address_sets.items()},
        "blockSets": {
            k: [_element(e) for e in sorted(b.elements)] for k, b in program.block_sets.items()
        },
    }


def program_to_text(program: HostProgram) -> str:
    lines = [f"host {program.host}: " + ", ".join(f"{v} {k}" for k, v in program.size().items())]
    lines.append("")
    for ep in program.endpoints.values():
        default = ep.default + (" (logged)" if ep.log_default else "")
        lines.append(f"endpoint {ep.key}  mac {ep.mac}  ips {', '.join(ep.ips) or '-'}")
        for label, tiers in (("in ", ep.ingress), ("out", ep.egress)):
            chains = "  ".join(f"{t}: {', '.join(c)}" for t, c in _dispatch(tiers).items())
            lines.append(f"  {label} {chains or '(no policy)'}  then {default}")
    for chain in program.chains.values():
        lines.append("")
        lines.append(f"chain {chain.name}")
        for item in chain.items:
            if isinstance(item, MatchRule):
                services = "any" if item.services is None else ",".join(map(str, item.services))
                log = " log" if item.log else ""
                lines.append(
                    f"  {item.action:6} {item.rule}: from {item.src or 'any'} to "
                    f"{item.dst or 'any'} services {services}{log}"
                )
            else:
                size = len(program.block_sets[item.block].elements)
                lines.append(
                    f"  {item.action:6} lookup {item.block} ({size} elements) "
                    f"for {', '.join(item.rules)}"
                )
    if program.address_sets:
        lines.append("")
    for s in program.address_sets.values():
        lines.append(f"set {s.name}: {', '.join(_addresses(s)) or '(empty)'}")
    return "\n".join(lines)


def program_hash(program: HostProgram) -> str:
    """A stable digest of a program: equal programs, equal hashes (agents report it; the
    manager updates it incrementally: `compiler.digest`)."""
    return digest_text(program_digest(program))
