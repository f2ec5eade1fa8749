"""An endpoint's decisions as bit masks over the workload addresses of a family.

`reach` asks of every endpoint the same question: on each protocol and port, which
workload addresses at the other end does it allow, and by which rule? Cells per address
class (`decisions.Decider.cells`) answer it one class at a time; here the answer is a few
Python ints. The workload addresses of a family, sorted, are bit positions (`AddressBits`:
address `taken[i]` is bit `i`), so a box's other-end intervals become one mask (an interval
is a contiguous run of positions, `(1 << j) - (1 << i)`), kept per interned address tuple
(the view interns them: boxes of many endpoints share one). `allowed_pieces` then runs the
first match of `decisions.decide` (tiers, `pass` skipping the rest of its tier, the
endpoint's default at the end) over masks instead of one address at a time, once per port
class: the ports of each protocol cut at the endpoint's own boxes' port boundaries, and
adjacent classes with the same outcome merged. Pure; `tests/analysis/test_masks.py` checks
it against `decide` on every address and port boundary.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import NamedTuple

from hyperwall.analysis.classes import cut_points, split
from hyperwall.analysis.decisions import Box, Space
from hyperwall.compiler.intervals import Interval
from hyperwall.evaluator.evaluate import DEFAULT
from hyperwall.policy.model import Verdict


class Piece(NamedTuple):
    """Allowed: the addresses of `mask` on `proto` ports `low`..`high`, by `rule` (a
    named tuple: a large fleet makes about a million of them)."""

    proto: int
    low: int
    high: int
    rule: str
    mask: int


_NONZERO = re.compile(rb"[^\x00]+")
BYTE_BITS = [tuple(k for k in range(8) if value >> k & 1) for value in range(256)]


def nonzero_bytes(mask: int) -> list[tuple[int, int]]:
    """The non-zero bytes of `mask` as (byte index, value), low first: a mask walked a
    byte at a time, the zero runs skipped in C."""
    data = mask.to_bytes((mask.bit_length() + 7) // 8, "little")
    out: list[tuple[int, int]] = []
    for run in _NONZERO.finditer(data):
        out.extend(enumerate(run.group(), run.start()))
    return out


def positions(mask: int) -> list[int]:
    """The set bits of `mask`, ascending."""
    return [8 * j + k for j, value in nonzero_bytes(mask) for k in BYTE_BITS[value]]


class AddressBits:
    """The sorted workload addresses of one family as bit positions."""

    def __init__(self, taken: Sequence[int]) -> None:
        self.taken = taken
        self.position = {value: i for i, value in enumerate(taken)}
        self._masks: dict[int, tuple[tuple[Interval, ...], int]] = {}  # id -> (kept, mask)

    def mask(self, intervals: tuple[Interval, ...]) -> int:
        """The workload addresses inside `intervals` (sorted, merged) as a mask; kept per
        tuple object (the tuple is held, so its id is not reused meanwhile)."""
        found = self._masks.get(id(intervals))
        if found is not None:
            return found[1]
        taken, mask = self.taken, 0
        for low, high in intervals:
            i, j = bisect_left(taken, low), bisect_right(taken, high)
            if i < j:
                mask |= (1 << j) - (1 << i)
        self._masks[id(intervals)] = (intervals, mask)
        return mask

    def bit(self, value: int) -> int:
        return 1 << self.position[value]


def _first_match(
    boxes: Sequence[Box], masks: Sequence[int], order: Sequence[int], universe: int
) -> tuple[list[tuple[str, int]], int]:
    """First match over `boxes[i]` for i in `order` (the boxes that match the port class,
    in evaluation order): the allowed (rule, addresses) and the addresses left undecided."""
    undecided, tier, skipping = universe, -1, 0
    allowed: list[tuple[str, int]] = []
    for i in order:
        box = boxes[i]
        if box.tier != tier:
            tier, skipping = box.tier, 0
        hit = undecided & masks[i]
        if skipping:
            hit &= ~skipping
        if not hit:
            continue
        if box.action == "pass":
            skipping |= hit
            continue
        undecided ^= hit
        if box.action == "allow":
            allowed.append((box.rule, hit))
        if not undecided:
            break
    return allowed, undecided


def allowed_pieces(
    boxes: Sequence[Box], default: Verdict, space: Space, bits: AddressBits, universe: int
) -> list[Piece]:
    """What an endpoint running `boxes` (one direction, one own address) allows of the
    other-end addresses in `universe` (a mask of `bits`) on `space`: one `Piece` per
    (merged port class, deciding rule), in protocol and port order; denied cases left out."""
    masks = [bits.mask(b.other) & universe for b in boxes]
    shapes: list[tuple[int, dict[int, list[Interval]] | None]] = []  # None: every port
    for i, box in enumerate(boxes):
        if not masks[i]:
            continue
        if box.ports is None or any(p == 0 for p, _, _ in box.ports):
            shapes.append((i, None))
            continue
        by_proto: dict[int, list[Interval]] = {}
        for p, low, high in box.ports:
            by_proto.setdefault(p, []).append((low, high))
        shapes.append((i, by_proto))
    out: list[Piece] = []
    for proto, ranges in sorted(space.items()):
        ports_of = [
            (i, None if shape is None else shape[proto])
            for i, shape in shapes
            if shape is None or proto in shape
        ]
        classes = split(ranges, cut_points(r for _, r in ports_of if r is not None))
        lows = [low for low, _ in classes]
        order: list[list[int]] = [[] for _ in classes]
        for i, box_ports in ports_of:
            if box_ports is None:
                for found in order:
                    found.append(i)
                continue
            for low, high in box_ports:
                for k in range(bisect_left(lows, low), bisect_right(lows, high)):
                    order[k].append(i)
        run: tuple[int, int, tuple[tuple[str, int], ...]] | None = None
        for (low, high), picked in zip(classes, order, strict=True):
            allowed, undecided = _first_match(boxes, masks, picked, universe)
            if default == "allow" and undecided:
                allowed.append((DEFAULT, undecided))
            outcome = tuple(allowed)
            if run is not None and run[2] == outcome and run[1] + 1 == low:
                run = (run[0], high, outcome)
                continue
            if run is not None:
                out.extend(Piece(proto, run[0], run[1], r, m) for r, m in run[2])
            run = (low, high, outcome)
        if run is not None:
            out.extend(Piece(proto, run[0], run[1], r, m) for r, m in run[2])
    return out
