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

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from itertools import accumulate
from operator import xor
from typing import Literal

from hyperwall.analysis.classes import cut_points, split, subtract
from hyperwall.compiler.chains import CompiledChain
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


@dataclass(frozen=True, slots=True)
class RuleBox:
    """A box of one chain before the own address is known: it applies where `own` (None:
    any own address) contains the endpoint's address."""

    action: Action
    rule: str
    own: tuple[Interval, ...] | None
    other: tuple[Interval, ...]
    ports: tuple[PortRange, ...] | None


def chain_boxes(
    compiled: CompiledChain,
    address_set: Callable[[str], AddressSet],
    direction: Literal["in", "out"],
    family: int,
) -> list[RuleBox]:
    """One compiled chain's rules as boxes of one family and direction, in chain order; a
    folded block's elements grouped per rule, port range and own interval."""
    out: list[RuleBox] = []
    for item in compiled.chain.items:
        if isinstance(item, MatchRule):
            own_set, other_set = (
                (item.src, item.dst) if direction == "out" else (item.dst, item.src)
            )
            own = None if own_set is None else _family(address_set(own_set), family)
            other = FULL[family] if other_set is None else _family(address_set(other_set), family)
            if other and own != ():
                out.append(RuleBox(item.action, item.rule, own, other, port_ranges(item.services)))
            continue
        found: dict[tuple[str, PortRange, Interval], list[Interval]] = defaultdict(list)
        for f, sl, sh, dl, dh, proto, low, high, rule in compiled.blocks[item.block].elements:
            if f == family:
                mine, theirs = ((sl, sh), (dl, dh)) if direction == "out" else ((dl, dh), (sl, sh))
                found[(rule, (proto, low, high), mine)].append(theirs)
        by_rule: dict[str, list[RuleBox]] = defaultdict(list)
        for (rule, ports, mine), others in sorted(found.items()):
            by_rule[rule].append(RuleBox(item.action, rule, (mine,), merge(others), (ports,)))
        for rule in item.rules:
            out.extend(by_rule.get(rule, ()))
    return out


def endpoint_boxes(
    endpoint: Endpoint,
    direction: Literal["in", "out"],
    own: int,
    boxes_of: Callable[[str], list[RuleBox]],
) -> list[tuple[int, RuleBox]]:
    """The rules `endpoint` runs in `direction` that can match with own address `own`, with
    their tiers; `boxes_of(chain name)` gives a chain's `RuleBox`es (`chain_boxes`)."""
    selected: list[tuple[int, RuleBox]] = []
    for tier, chains in enumerate(endpoint.dispatch(direction)):
        for chain_name in chains:
            selected.extend((tier, rb) for rb in own_boxes(boxes_of(chain_name), own))
    return selected


def own_cuts(boxes: list[RuleBox]) -> tuple[int, ...]:
    """Where the own sides of a chain's boxes begin and end (each `[lo, hi]` cuts before
    `lo` and after `hi`), sorted: own addresses with the same `bisect_right(cuts, own)`
    lie in the same own sides, so `own_boxes` selects the same boxes for them."""
    return tuple(sorted({c for rb in boxes if rb.own for lo, hi in rb.own for c in (lo, hi + 1)}))


def own_boxes(boxes: list[RuleBox], own: int) -> tuple[RuleBox, ...]:
    """The boxes of one chain that can match with own address `own`."""
    return tuple(rb for rb in boxes if rb.own is None or contains(rb.own, own))


def as_boxes(selected: list[tuple[int, RuleBox]]) -> list[Box]:
    return [Box(tier, rb.action, rb.rule, rb.other, rb.ports) for tier, rb in selected]


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


def _toggles(boxes: list[Box]) -> dict[int, int]:
    """Per cut point, the bits (box positions) that enter or leave there."""
    toggles: dict[int, int] = defaultdict(int)
    for i, box in enumerate(boxes):
        bit = 1 << i
        for low, high in box.other:
            toggles[low] ^= bit
            toggles[high + 1] ^= bit
    return toggles


def segments(boxes: list[Box], targets: tuple[Interval, ...]) -> Iterator[tuple[Interval, int]]:
    """The equivalence classes of `targets` (sorted, merged): maximal runs of addresses that
    lie in the same boxes, each with those boxes as a bit mask (bit i: `boxes[i]`). A sweep
    over the boxes' interval ends; adjacent runs in the same boxes are one class."""
    toggles = _toggles(boxes)
    active = 0
    cuts = sorted(toggles)
    k = 0  # next cut to apply
    pending: tuple[Interval, int] | None = None
    for low, high in targets:
        pos = low
        while pos <= high:
            while k < len(cuts) and cuts[k] <= pos:
                active ^= toggles[cuts[k]]
                k += 1
            end = min(high, cuts[k] - 1) if k < len(cuts) else high
            if pending is not None and pending[1] == active and pending[0][1] + 1 == pos:
                pending = ((pending[0][0], end), active)
            else:
                if pending is not None:
                    yield pending
                pending = ((pos, end), active)
            pos = end + 1
    if pending is not None:
        yield pending


# class lows, highs, box masks: tuples, which (unlike lists) the garbage collector stops
# walking once it has seen that they hold only numbers
Runs = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def runs(boxes: list[Box], span: Interval) -> Runs:
    """`segments(boxes, (span,))` as three parallel lists (lows, highs, masks: no tuple
    per class, which on a large heap also means fewer garbage collections), for one whole
    span (an address family) that holds every box: the running mask is a prefix XOR over
    the sorted cuts, and only the cuts that flip some bit are kept (the boxes' intervals
    are merged, so the mask changes at every kept cut). The same classes, without a Python
    step per address run."""
    low, high = span
    toggles = _toggles(boxes)
    cuts = sorted(c for c, t in toggles.items() if t and c <= high)
    masks = list(accumulate([toggles[c] for c in cuts], xor))
    if not cuts or cuts[0] != low:
        cuts.insert(0, low)
        masks.insert(0, 0)
    ends = [c - 1 for c in cuts[1:]]
    ends.append(high)
    return tuple(cuts), tuple(ends), tuple(masks)


FLIP_LIMIT = 256  # moved intervals past which a decider is swept again, not patched


def flips(old: list[Box], new: list[Box]) -> list[tuple[Interval, int]] | None:
    """Where each box's bit differs between `old` and `new`: per box whose other-end
    addresses moved, the intervals of the symmetric difference with the box's bit. None if
    the lists differ in anything else (length, tier, action, rule, ports) or if more than
    `FLIP_LIMIT` intervals moved."""
    if len(old) != len(new):
        return None
    out: list[tuple[Interval, int]] = []
    for i, (a, b) in enumerate(zip(old, new, strict=True)):
        if a.tier != b.tier or a.action != b.action or a.rule != b.rule or a.ports != b.ports:
            return None
        if a.other is b.other or a.other == b.other:
            continue
        bit = 1 << i
        x, y = _differing(a.other, b.other)
        moved = merge([*subtract(x, y), *subtract(y, x)])
        out.extend((interval, bit) for interval in moved)
        if len(out) > FLIP_LIMIT:
            return None
    return out


def _differing(
    a: tuple[Interval, ...], b: tuple[Interval, ...]
) -> tuple[tuple[Interval, ...], tuple[Interval, ...]]:
    """`a` and `b` without their common leading and trailing intervals (which lie in
    both, apart from the rest, so the symmetric difference is that of what remains);
    found by bisection on slices compared in C, as a change moves few of many intervals."""
    low, high = 0, min(len(a), len(b))
    while low < high:  # the longest common prefix
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    prefix = low
    low, high = 0, min(len(a), len(b)) - prefix
    while low < high:  # the longest common suffix of what follows it
        mid = (low + high + 1) // 2
        if a[len(a) - mid :] == b[len(b) - mid :]:
            low = mid
        else:
            high = mid - 1
    return a[prefix : len(a) - low], b[prefix : len(b) - low]


def flip_runs(swept: Runs, moved: list[tuple[Interval, int]]) -> Runs:
    """`runs` after flipping bit `bit` over each `(interval, bit)` of `moved` (the boxes'
    symmetric differences, `flips`): split the runs at each interval's ends, XOR the runs
    inside, and join neighbours whose masks became equal. The result is what `runs` gives
    for the new boxes (maximal runs: neighbours always differ), the old lists untouched."""
    lows, highs, masks = list(swept[0]), list(swept[1]), list(swept[2])
    for (low, high), bit in moved:
        _split_at(lows, highs, masks, low)
        if high < highs[-1]:
            _split_at(lows, highs, masks, high + 1)
        first, last = bisect_left(lows, low), bisect_right(lows, high)
        for k in range(first, last):
            masks[k] ^= bit
        _join_at(lows, highs, masks, last)
        _join_at(lows, highs, masks, first)
    return tuple(lows), tuple(highs), tuple(masks)


def _split_at(lows: list[int], highs: list[int], masks: list[int], start: int) -> None:
    """Make a run begin at `start` (inside the family)."""
    k = bisect_right(lows, start) - 1
    if lows[k] != start:
        lows.insert(k + 1, start)
        highs.insert(k + 1, highs[k])
        masks.insert(k + 1, masks[k])
        highs[k] = start - 1


def _join_at(lows: list[int], highs: list[int], masks: list[int], k: int) -> None:
    """Join run `k` into run `k - 1` if they now lie in the same boxes."""
    if 0 < k < len(lows) and masks[k - 1] == masks[k]:
        highs[k - 1] = highs[k]
        del lows[k], highs[k], masks[k]


def members(mask: int) -> list[int]:
    """The positions of the set bits of `mask`, ascending."""
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


Decided = tuple[int, Interval, Verdict, str]  # protocol, port class, verdict, rule


def decide_all(boxes: list[Box], inside: int, default: Verdict, space: Space) -> list[Decided]:
    sub = [boxes[i] for i in members(inside)]
    out = []
    for proto, ranges in space.items():
        pcuts = cut_points(
            [(low, high)] for b in sub if b.ports for p, low, high in b.ports if p == proto
        )
        for ports in split(ranges, pcuts):
            verdict, rule = decide(sub, proto, ports[0], default)
            out.append((proto, ports, verdict, rule))
    return out


def allowed_port(decided: Decided, proto: int, ports: Interval) -> int | None:
    """The lowest port of `ports` that `decided` (one port class's decision) allows for
    `proto`; None if none."""
    p, (low, high), verdict, _ = decided
    if p == proto and verdict == "allow" and low <= ports[1] and high >= ports[0]:
        return max(low, ports[0])
    return None


class Decider:
    """One endpoint's boxes (for one direction and own address) with its classes over the
    whole address family computed once, and each set of boxes decided once per service
    space: what the analyses ask of an endpoint again and again, with other targets."""

    def __init__(self, boxes: list[Box], default: Verdict, family: int) -> None:
        self.boxes = boxes
        self.default = default
        self.family = family
        self._decided: dict[tuple[int, int], tuple[Decided, ...]] = {}
        self._spaces: dict[Hashable, int] = {}  # service space -> a small number
        # (box set, space, wanted verdict) -> the decisions with it, the rules of the rest
        self._parts: dict[tuple[int, int, bool], tuple[tuple[Decided, ...], frozenset[str]]] = {}
        self._swept: Runs | None = None

    @property
    def swept(self) -> Runs:
        """The classes over the whole family (`runs`), swept on first use: `reach` reads
        only the boxes."""
        if self._swept is None:
            self._swept = runs(self.boxes, FULL[self.family][0])
        return self._swept

    def patched(self, boxes: list[Box]) -> Decider | None:
        """A decider for `boxes`, which are this decider's boxes except for the other-end
        addresses of some (`flips`), derived from this one instead of swept and decided
        again: its classes are these with each moved box's bit flipped where that box's
        addresses changed (`flip_runs`), and its decisions per set of boxes are these (a
        decision reads the boxes' tiers, actions, rules and ports, not their addresses).
        None if the boxes differ otherwise, or in so many places that a sweep is as cheap."""
        moved = flips(self.boxes, boxes)
        if moved is None:
            return None
        new = Decider(boxes, self.default, self.family)
        new._decided, new._spaces, new._parts = self._decided, self._spaces, self._parts
        if self._swept is not None:
            new._swept = flip_runs(self._swept, moved)
        return new

    def _decide(self, inside: int, space: Space, space_key: int) -> tuple[Decided, ...]:
        key = (inside, space_key)
        found = self._decided.get(key)
        if found is None:
            found = self._decided[key] = tuple(decide_all(self.boxes, inside, self.default, space))
        return found

    def _part(
        self, inside: int, space: Space, space_key: int, wanted: bool
    ) -> tuple[tuple[Decided, ...], frozenset[str]]:
        key = (inside, space_key, wanted)
        found = self._parts.get(key)
        if found is None:
            decided = self._decide(inside, space, space_key)
            found = self._parts[key] = (
                tuple(d for d in decided if (d[2] == "allow") == wanted),
                frozenset(d[3] for d in decided if (d[2] == "allow") != wanted),
            )
        return found

    def decided_at(self, address: int, space: Space) -> tuple[Decided, ...]:
        """The decisions of the class holding `address` (in the family) over `space`,
        port classes ascending per protocol."""
        lows, _, masks = self.swept
        space_key = self._spaces.setdefault(tuple(sorted(space.items())), len(self._spaces))
        return self._decide(masks[bisect_right(lows, address) - 1], space, space_key)

    def cells(
        self,
        targets: tuple[Interval, ...],
        space: Space,
        only: Literal["allowed", "denied"] | None = None,
        others: set[str] | None = None,
    ) -> Iterator[Cell]:
        """The decision for every class of `targets` (other-end addresses) x `space`.

        `only`: yield only the allowed (or only the denied) cells, and add the rules that
        decided the others to `others` (evidence).
        """
        wanted = only == "allowed"
        space_key = self._spaces.setdefault(tuple(sorted(space.items())), len(self._spaces))
        lows, highs, masks = self.swept
        n = len(lows)
        for low, high in targets:
            i = max(0, bisect_right(lows, low) - 1)
            while i < n and lows[i] <= high:
                inside = masks[i]
                if only is None:
                    picked = self._decide(inside, space, space_key)
                else:
                    picked, rest = self._part(inside, space, space_key, wanted)
                    if others is not None and rest:
                        others |= rest
                if picked:
                    cls = (max(lows[i], low), min(highs[i], high))
                    for proto, ports, verdict, rule in picked:
                        yield Cell(cls, proto, ports, verdict, rule)
                i += 1
