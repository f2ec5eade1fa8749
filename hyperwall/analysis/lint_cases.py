"""Every distinct way the fleet's rules meet a first packet: what `lint` tallies.

Lint asks, for every enforcement point (a workload endpoint, one of its own addresses, a
direction) and every class of the whole packet space (other-end address, protocol, port),
which rules match in evaluation order and what the default is. Its findings are unions over
those cases, so each distinct case (`Case`: the default and the matching rules as
(tier, action, rule)) needs to be seen once, however many points and classes share it.
`packet_cases(view)` finds them without deciding every point and class:

1. points are grouped by *profile* (family, direction, default, the chains the endpoint
   runs per tier): the points of a profile differ only in the own address, which picks the
   boxes whose own side contains it (`selections`: a bit mask per distinct pick); boxes
   no point of the profile picks are dropped;
2. the other-end classes of a profile are unions of the fleet's atoms (`analysis.atoms`,
   built once per family over every kept box's other-end set), so its distinct box masks
   are those of its atoms; a point's classes are those masks cut to its pick;
3. per distinct sequence of boxes (tier, action, rule, ports) the ports of each protocol
   are cut at the boxes' port boundaries, and each port class's matching boxes give a case.

Exact (nothing sampled): every (point, address, protocol, port) lies in one profile, pick,
atom and port class, and every case found is met by some of them. Pure.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Sequence
from typing import Literal, NamedTuple

from hyperwall.analysis.atoms import Atoms
from hyperwall.analysis.decisions import FULL, PACKET_SPACE, PortRange, RuleBox, members
from hyperwall.analysis.view import FleetView
from hyperwall.compiler.intervals import Interval, address_interval, contains, merge
from hyperwall.policy.model import Action, Verdict

Direction = Literal["in", "out"]
Profile = tuple[int, Direction, Verdict, tuple[tuple[str, ...], ...]]
Signature = tuple[int, Action, str, tuple[PortRange, ...] | None]  # tier, action, rule, ports


class Act(NamedTuple):
    """A rule as a case sees it: its tier, action and id."""

    tier: int
    action: Action
    rule: str


Case = tuple[Verdict, tuple[Act, ...]]  # the default, the matching rules in order


def profiles(view: FleetView) -> dict[Profile, list[int]]:
    """Every enforcement point, as its profile and own address."""
    found: dict[Profile, list[int]] = defaultdict(list)
    for wk in view.catalog.workloads:
        for ep in view.compiler.endpoints(wk):
            for ip in ep.ips:
                family, (own, _) = address_interval(ip)
                for direction in ("in", "out"):
                    found[(family, direction, ep.default, ep.dispatch(direction))].append(own)
    return found


def selections(boxes: Sequence[tuple[int, RuleBox]], owns: Sequence[int]) -> set[int]:
    """The distinct picks (bit i: `boxes[i]`) of the own addresses `owns`: a box applies
    where its own side contains the address (`decisions.endpoint_boxes`)."""
    base = 0
    by_own: dict[int, tuple[tuple[Interval, ...], int]] = {}
    for i, (_, rb) in enumerate(boxes):
        if rb.own is None:
            base |= 1 << i
        else:
            intervals, bits = by_own.get(id(rb.own), (rb.own, 0))
            by_own[id(rb.own)] = (intervals, bits | 1 << i)
    ordered = sorted(set(owns))
    picks = [base] * len(ordered)
    for intervals, bits in by_own.values():
        if len(intervals) < len(ordered):
            for low, high in intervals:
                for j in range(bisect_left(ordered, low), bisect_right(ordered, high)):
                    picks[j] |= bits
        else:
            for j, own in enumerate(ordered):
                if contains(intervals, own):
                    picks[j] |= bits
    return set(picks)


def _picked(
    boxes: list[tuple[int, RuleBox]], owns: Sequence[int]
) -> tuple[list[tuple[int, RuleBox]], set[int]]:
    """The boxes that some own address picks (most block elements of a profile belong to
    the other endpoints of its policies' groups), and the picks renumbered over them."""
    picks = selections(boxes, owns)
    used = 0
    for pick in picks:
        used |= pick
    kept = members(used)
    position = {old: new for new, old in enumerate(kept)}
    renumbered = {sum(1 << position[i] for i in members(pick)) for pick in picks}
    return [boxes[i] for i in kept], renumbered


class _Ports:
    """The distinct masks of matching boxes over the port classes (of every protocol) of a
    sequence of boxes' port ranges; each box's ranges are merged per protocol once."""

    def __init__(self) -> None:
        self._ids: dict[tuple[PortRange, ...] | None, int] = {}
        # per id: None (any protocol and port) or, per protocol, the merged ranges
        self._ranges: list[dict[int, tuple[Interval, ...]] | None] = []

    def id_of(self, ports: tuple[PortRange, ...] | None) -> int:
        """A small number per distinct port ranges of a box."""
        found = self._ids.get(ports)
        if found is None:
            found = self._ids[ports] = len(self._ranges)
            per: dict[int, tuple[Interval, ...]] | None = None
            if ports is not None and all(p != 0 for p, _, _ in ports):
                per = {
                    proto: merge((lo, hi) for p, lo, hi in ports if p == proto)
                    for proto in {p for p, _, _ in ports}
                }
            self._ranges.append(per)
        return found

    def masks(self, family: int, ports: Sequence[int]) -> set[int]:
        """The distinct masks (bit i: box i matches) of the port classes of every protocol
        of the family's packet space; `ports` are the boxes' `id_of`. (Not kept: few box
        sequences share their port ranges, and the masks of all would fill memory.)"""
        always = 0
        toggles: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        for i, port_id in enumerate(ports):
            per = self._ranges[port_id]
            if per is None:
                always |= 1 << i
                continue
            for proto, merged in per.items():
                cuts = toggles[proto]
                for low, high in merged:
                    cuts[low] ^= 1 << i
                    cuts[high + 1] ^= 1 << i
        out: set[int] = set()
        for proto, space in PACKET_SPACE[family].items():
            if proto in toggles:
                out |= _sweep(toggles[proto], always, space)
            else:
                out.add(always)
        return out


def _sweep(toggles: dict[int, int], always: int, space: Sequence[Interval]) -> set[int]:
    """The distinct masks over the port classes of `space`: `always`, XOR the bits that
    `toggles` flip at each cut."""
    cuts = sorted(toggles)
    out: set[int] = set()
    for low, high in space:
        mask = always
        k = 0
        while k < len(cuts) and cuts[k] <= low:
            mask ^= toggles[cuts[k]]
            k += 1
        out.add(mask)
        while k < len(cuts) and cuts[k] <= high:
            mask ^= toggles[cuts[k]]
            out.add(mask)
            k += 1
    return out


def packet_cases(view: FleetView) -> set[Case]:
    """Every distinct case of the fleet (module docstring)."""
    points = profiles(view)
    picked: dict[Profile, tuple[list[tuple[int, RuleBox]], set[int]]] = {}
    sets: dict[int, dict[int, int]] = {4: {}, 6: {}}  # family -> id(other) -> set index
    others: dict[int, list[tuple[Interval, ...]]] = {4: [], 6: []}
    for profile, owns in points.items():
        family, direction, _, dispatch = profile
        every = [
            (tier, rb)
            for tier, chains in enumerate(dispatch)
            for name in chains
            for rb in view.chain_boxes(name, direction, family)
        ]
        boxes, _ = picked[profile] = _picked(every, owns)
        for _, rb in boxes:
            if id(rb.other) not in sets[family]:
                sets[family][id(rb.other)] = len(others[family])
                others[family].append(rb.other)
    atoms = {f: Atoms(others[f], FULL[f][0]) for f in (4, 6) if others[f]}
    signatures: dict[Signature, int] = {}
    sequences: dict[tuple[int, tuple[int, ...]], set[Verdict]] = defaultdict(set)
    for profile, (boxes, picks) in picked.items():
        family, _, default, _ = profile
        if not boxes:
            continue
        index = sets[family]
        by_set: dict[int, int] = defaultdict(int)
        sig_ids = []
        for i, (tier, rb) in enumerate(boxes):
            by_set[index[id(rb.other)]] |= 1 << i
            sig = (tier, rb.action, rb.rule, rb.ports)
            sig_ids.append(signatures.setdefault(sig, len(signatures)))
        seen: set[int] = set()
        for mask in atoms[family].masks(by_set.items()):
            for pick in picks:
                inside = mask & pick
                if inside not in seen:
                    seen.add(inside)
                    sequences[(family, tuple(sig_ids[i] for i in members(inside)))].add(default)
    ports = _Ports()
    port_of = [ports.id_of(sig[3]) for sig in signatures]
    act_of = [Act(tier, action, rule) for tier, action, rule, _ in signatures]
    cases: set[Case] = set()
    for (family, ids), defaults in sequences.items():
        acts = [act_of[i] for i in ids]
        for mask in ports.masks(family, [port_of[i] for i in ids]):
            matching = tuple(acts[i] for i in members(mask))
            cases.update((default, matching) for default in defaults)
    return cases
