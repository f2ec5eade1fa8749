"""What one endpoint decides, as boxes over the other end's address and the service.

For one endpoint (a VM interface), one direction and one of its own addresses, the rules it
runs (its dispatch: tiers, chains, items; `compiler.program`) become a list of `Box`es in
evaluation order: the other end's addresses, the ports (ICMP types) per protocol, the action
and the rule id. Rules whose own side does not contain the own address are left out: they
can never match there. `decide` is then the first match, with `pass` skipping the rest of its
tier and the endpoint's default at the end: the reference evaluator's
(`evaluator.evaluate.evaluate_rules`) semantics, over boxes instead of one packet.
`decisions` cuts a target region into equivalence classes (`analysis.classes`) and decides
one representative of each. Pure: reads a `FleetCompiler`, changes nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from hyperwall.analysis.classes import cut_points, intersect, split
from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.intervals import FULL_V4, FULL_V6, Interval, contains, merge
from hyperwall.compiler.program import AddressSet, Endpoint, MatchRule
from hyperwall.evaluator.evaluate import DEFAULT
from hyperwall.policy.model import Action, Verdict
from hyperwall.policy.ports import PROTO_NUMBERS, PortMatch

PortRange = tuple[int, int, int]  # protocol number (0: any protocol), low, high
Space = Mapping[int, tuple[Interval, ...]]  # protocol number -> ports (ICMP types)

# Every first packet `trace` can express, per family: TCP/UDP/SCTP ports 1-65535 and the
# family's ICMP types 0-255.
PACKET_SPACE: dict[int, dict[int, tuple[Interval, ...]]] = {
    4: {6: ((1, 65535),), 17: ((1, 65535),), 132: ((1, 65535),), 1: ((0, 255),)},
    6: {6: ((1, 65535),), 17: ((1, 65535),), 132: ((1, 65535),), 58: ((0, 255),)},
}
PROTO_NAMES = {number: name for name, number in PROTO_NUMBERS.items()}
FULL: dict[int, tuple[Interval, ...]] = {4: FULL_V4, 6: FULL_V6}


@dataclass(frozen=True, slots=True)
class Box:
    tier: int
    action: Action
    rule: str
    other: tuple[Interval, ...]  # the other end's addresses, merged
    ports: tuple[PortRange, ...] | None  # None: any protocol and port


@dataclass(frozen=True, slots=True)
class Cell:
    """One equivalence class and its decision: other-end addresses x protocol x ports."""

    addresses: Interval
    proto: int
    ports: Interval
    verdict: Verdict
    rule: str

    def service(self) -> str:
        """The first port of the class as `trace --service` takes it (`tcp/5432`)."""
        return f"{PROTO_NAMES[self.proto]}/{self.ports[0]}"


def port_ranges(services: tuple[PortMatch, ...] | None) -> tuple[PortRange, ...] | None:
    if services is None:
        return None
    out: list[PortRange] = []
    for s in services:
        if s.proto == "any":
            return None
        number = PROTO_NUMBERS[s.proto]
        out.append((number, 0, 65535) if s.any_value else (number, s.low, s.high))
    return tuple(out)


def service_space(
    services: tuple[PortMatch, ...] | None, family: int
) -> dict[int, tuple[Interval, ...]]:
    """The protocols and ports of `services` (None: all) among the family's first packets."""
    space = PACKET_SPACE[family]
    ranges = port_ranges(services)
    if ranges is None:
        return dict(space)
    picked: dict[int, list[Interval]] = defaultdict(list)
    for proto, low, high in ranges:
        for full_low, full_high in space.get(proto, ()):
            if max(low, full_low) <= min(high, full_high):
                picked[proto].append((max(low, full_low), min(high, full_high)))
    return {proto: merge(found) for proto, found in picked.items()}


def _family(s: AddressSet, family: int) -> tuple[Interval, ...]:
    return s.v4 if family == 4 else s.v6


def endpoint_boxes(
    compiler: FleetCompiler,
    endpoint: Endpoint,
    direction: Literal["in", "out"],
    family: int,
    own: int,
) -> list[Box]:
    """The rules `endpoint` runs in `direction` that can match with own address `own`."""
    boxes: list[Box] = []
    for tier, chains in enumerate(endpoint.dispatch(direction)):
        for chain_name in chains:
            compiled = compiler.chain(chain_name)
            for item in compiled.chain.items:
                if isinstance(item, MatchRule):
                    own_set, other_set = (
                        (item.src, item.dst) if direction == "out" else (item.dst, item.src)
                    )
                    if own_set is not None and not contains(
                        _family(compiler.address_set(own_set), family), own
                    ):
                        continue
                    other = (
                        FULL[family]
                        if other_set is None
                        else _family(compiler.address_set(other_set), family)
                    )
                    if other:
                        boxes.append(
                            Box(tier, item.action, item.rule, other, port_ranges(item.services))
                        )
                    continue
                found: dict[tuple[str, PortRange], list[Interval]] = defaultdict(list)
                for f, sl, sh, dl, dh, proto, low, high, rule in compiled.blocks[
                    item.block
                ].elements:
                    mine, theirs = (
                        ((sl, sh), (dl, dh)) if direction == "out" else ((dl, dh), (sl, sh))
                    )
                    if f == family and mine[0] <= own <= mine[1]:
                        found[(rule, (proto, low, high))].append(theirs)
                by_rule: dict[str, list[Box]] = defaultdict(list)
                for (rule, ports), others in sorted(found.items()):
                    by_rule[rule].append(Box(tier, item.action, rule, merge(others), (ports,)))
                for rule in item.rules:
                    boxes.extend(by_rule.get(rule, ()))
    return boxes


def port_matches(ports: tuple[PortRange, ...] | None, proto: int, port: int) -> bool:
    if ports is None:
        return True
    return any(p == 0 or (p == proto and low <= port <= high) for p, low, high in ports)


def decide(boxes: list[Box], proto: int, port: int, default: Verdict) -> tuple[Verdict, str]:
    """First match among `boxes` (already filtered to one other-end class)."""
    skipped = -1
    for box in boxes:
        if box.tier == skipped or not port_matches(box.ports, proto, port):
            continue
        if box.action == "pass":
            skipped = box.tier
            continue
        return box.action, box.rule
    return default, DEFAULT


def segments(
    boxes: list[Box], targets: tuple[Interval, ...]
) -> Iterator[tuple[Interval, tuple[int, ...]]]:
    """The equivalence classes of `targets` (sorted, merged): maximal runs of addresses that
    lie in the same boxes, each with those boxes' positions (ascending). A sweep over the
    boxes' interval ends; adjacent runs with the same boxes are one class."""
    toggles: dict[int, list[int]] = defaultdict(list)
    for i, box in enumerate(boxes):
        for low, high in box.other:
            toggles[low].append(i)
            toggles[high + 1].append(i)
    active: set[int] = set()
    cuts = sorted(toggles)
    k = 0  # next cut to apply
    pending: tuple[Interval, tuple[int, ...]] | None = None
    for low, high in targets:
        pos = low
        while pos <= high:
            while k < len(cuts) and cuts[k] <= pos:
                active.symmetric_difference_update(toggles[cuts[k]])
                k += 1
            end = min(high, cuts[k] - 1) if k < len(cuts) else high
            inside = tuple(sorted(active))
            if pending is not None and pending[1] == inside and pending[0][1] + 1 == pos:
                pending = ((pending[0][0], end), inside)
            else:
                if pending is not None:
                    yield pending
                pending = ((pos, end), inside)
            pos = end + 1
    if pending is not None:
        yield pending


def _decide_all(
    boxes: list[Box], inside: tuple[int, ...], default: Verdict, space: Space
) -> list[tuple[int, Interval, Verdict, str]]:
    sub = [boxes[i] for i in inside]
    out = []
    for proto, ranges in space.items():
        pcuts = cut_points(
            [(low, high)] for b in sub if b.ports for p, low, high in b.ports if p == proto
        )
        for ports in split(ranges, pcuts):
            verdict, rule = decide(sub, proto, ports[0], default)
            out.append((proto, ports, verdict, rule))
    return out


def decisions(
    boxes: list[Box],
    default: Verdict,
    targets: tuple[Interval, ...],
    space: Space,
    allowed_only: bool = False,
) -> Iterator[Cell]:
    """The decision for every class of `targets` (other-end addresses) x `space`; classes
    in the same boxes are decided once. `allowed_only`: only the allowed cells; then, if the
    default denies, only the addresses some `allow` rule names are looked at (no other
    address can be allowed)."""
    if allowed_only and default != "allow":
        targets = intersect(
            targets, merge(i for b in boxes if b.action == "allow" for i in b.other)
        )
    decided: dict[tuple[int, ...], list[tuple[int, Interval, Verdict, str]]] = {}
    for cls, inside in segments(boxes, targets):
        found = decided.get(inside)
        if found is None:
            found = _decide_all(boxes, inside, default, space)
            if allowed_only:
                found = [d for d in found if d[2] == "allow"]
            decided[inside] = found
        for proto, ports, verdict, rule in found:
            yield Cell(cls, proto, ports, verdict, rule)
