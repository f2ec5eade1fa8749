"""One address family of the reach matrix: which rows reach which columns, on which ports,
by which rules; with bit masks, never one address class at a time.

A workload sender `a` reaches a workload receiver `b` (`a != b`) on a port iff `a`'s egress
allows `b` there and `b`'s ingress allows `a` there (`trace`'s two ends). Both ends are
`masks.Piece`s over the family's workload addresses: an egress piece of `a`'s decider says
"these receivers, on these ports, by this rule"; an ingress piece of `b`'s decider "these
senders, on these ports, by this rule". For one egress piece `g` (senders `A`: the senders
that run its decider, in the same rows) and one ingress piece `h` (senders `S`, receivers
`B`: those that run its decider) whose ports overlap, every `a` in `A & S` reaches every
`b` in `g.mask & B` (minus `a` itself): the pairs are a product, so no pair is visited.
Every allowed pair lies in exactly such a product (its two deciding pieces), so the union
over the overlapping (g, h) with a non-empty product is exact.

- senders are grouped by (egress decider, rows they are in): `_Senders`; receivers by
  ingress decider; ingress pieces that are alike (ports, rule, senders) are merged and
  indexed by their sender set, and a sender group looks up only the sender sets that hold
  one of its members (and of those, the pieces run by receivers its egress allows);
- what a sender group reaches is kept per port range and per rule as a mask of receivers,
  turned into a mask of columns once per group (`Sides`), and OR-ed into its rows
  (`Found`: per row, per port range and per rule, the columns as a mask);
- external (non-workload) addresses of a row or column are unfiltered at their end. The
  rows' and columns' external parts are cut into *atoms* at every boundary of every box in
  play and of every row and column, so an atom lies wholly inside or outside each; its
  low end is one more bit position. An egress piece's atom bits reach their columns (by
  the egress rule); an ingress piece's atom bits bring in their rows (by the ingress
  rule); external to external (two different non-workload addresses) reaches on every
  service, by no rule.

See `docs/design/analysis.md` ("Reach") for why this is exact. Pure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from hyperwall.analysis.classes import cut_points, distinct_pair, outside, points_within, split
from hyperwall.analysis.decisions import Decider, Space
from hyperwall.analysis.masks import (
    BYTE_BITS,
    AddressBits,
    Piece,
    allowed_pieces,
    nonzero_bytes,
    positions,
)
from hyperwall.analysis.view import FleetView
from hyperwall.compiler.intervals import Interval, merge

PortKey = tuple[int, int, int]  # protocol, low, high


@dataclass
class Found:
    """Per row: the columns it reaches (a mask over column positions) per port range and
    per deciding rule."""

    ports: list[dict[PortKey, int]]
    rules: list[dict[str, int]]

    @classmethod
    def empty(cls, rows: int) -> Found:
        return cls([defaultdict(int) for _ in range(rows)], [defaultdict(int) for _ in range(rows)])

    def add(
        self, rows: Iterable[int], columns: int, key: PortKey | None, rules: Iterable[str] = ()
    ) -> None:
        """`rows` reach `columns` on `key` (None: ports added on their own) by `rules`."""
        if not columns:
            return
        named = [r for r in rules if r]
        for r in rows:
            if key is not None:
                self.ports[r][key] |= columns
            found = self.rules[r]
            for rule in named:
                found[rule] |= columns


class Sides:
    """Masks of bit positions turned into masks of the rows (or columns) they are in: a
    byte of positions at a time (each byte value's sides OR-ed once), kept per mask."""

    def __init__(self, side_of: dict[int, list[int]], bits: AddressBits) -> None:
        self.of_bit: dict[int, int] = {}
        for value, sides in side_of.items():
            self.of_bit[bits.position[value]] = sum(1 << c for c in set(sides))
        self._bytes: dict[int, int] = {}  # byte index * 256 + value -> sides
        self._kept: dict[int, int] = {}

    def _byte(self, index: int, value: int) -> int:
        key = index * 256 + value
        found = self._bytes.get(key)
        if found is None:
            found = 0
            for k in BYTE_BITS[value]:
                found |= self.of_bit.get(8 * index + k, 0)
            self._bytes[key] = found
        return found

    def of(self, mask: int) -> int:
        found = self._kept.get(mask)
        if found is None:
            found = 0
            for index, value in nonzero_bytes(mask):
                found |= self._byte(index, value)
            self._kept[mask] = found
        return found


@dataclass
class _Ingress:
    """Ingress pieces alike in ports, rule and senders, merged: the receivers running them."""

    proto: int
    low: int
    high: int
    rule: str
    receivers: int = 0


@dataclass
class _Senders:
    """Senders that run one egress decider and are in the same rows."""

    decider: Decider
    rows: tuple[int, ...]
    mask: int = 0


def _overlapping(
    gs: Sequence[Piece], hs: Sequence[tuple[_Ingress, int]]
) -> Iterator[tuple[Piece, _Ingress, int]]:
    """Every (egress piece, ingress piece) of one protocol whose ports overlap; both lists
    sorted by their low port."""
    i = j = 0
    active_g: list[Piece] = []
    active_h: list[tuple[_Ingress, int]] = []
    while i < len(gs) or j < len(hs):
        if j >= len(hs) or (i < len(gs) and gs[i].low <= hs[j][0].low):
            g = gs[i]
            i += 1
            active_h = [h for h in active_h if h[0].high >= g.low]
            for h, senders in active_h:
                yield g, h, senders
            active_g.append(g)
        else:
            h, senders = hs[j]
            j += 1
            active_g = [g for g in active_g if g.high >= h.low]
            for g in active_g:
                yield g, h, senders
            active_h.append((h, senders))


class FamilyJoin:
    """See the module docstring: the cases of one family, added to `found`."""

    def __init__(
        self,
        view: FleetView,
        family: int,
        rows: Sequence[tuple[Interval, ...]],
        columns: Sequence[tuple[Interval, ...]],
        space: Space,
        found: Found,
    ) -> None:
        self.view, self.family, self.space, self.found = view, family, space, found
        self.rows, self.columns = rows, columns
        self.taken = taken = view.workload_ips[family]
        self.row_of = _membership([points_within(r, taken) for r in rows])
        self.column_of = _membership([points_within(c, taken) for c in columns])
        self.outside_rows = [outside(r, taken) for r in rows]
        self.outside_columns = [outside(c, taken) for c in columns]
        self._pieces: dict[tuple[Decider, str], list[Piece]] = {}

    def _decider(self, value: int, direction: Literal["in", "out"]) -> Decider:
        owner = self.view.owner(self.family, value)
        assert owner is not None
        return self.view.decider(owner, direction, self.family, value)

    def _allowed(
        self, decider: Decider, direction: Literal["in", "out"], universe: int
    ) -> list[Piece]:
        """A decider's pieces (one object may serve both directions: keyed by both)."""
        found = self._pieces.get((decider, direction))
        if found is None:
            found = allowed_pieces(decider.boxes, decider.default, self.space, self.bits, universe)
            self._pieces[(decider, direction)] = found
        return found

    def _atoms(self, deciders: Iterable[Decider]) -> list[Interval]:
        """The external (non-workload) addresses of the rows and columns, cut at every
        boundary of every box of `deciders` and of every row and column: within one atom
        every address is in the same boxes, rows and columns, so its low end stands for it."""
        regions = merge(i for side in (*self.outside_rows, *self.outside_columns) for i in side)
        if not regions:
            return []
        cuts: set[int] = set()
        seen: set[int] = set()
        for decider in deciders:
            for box in decider.boxes:
                if id(box.other) not in seen:
                    seen.add(id(box.other))
                    cuts.update(low for low, _ in box.other)
                    cuts.update(high + 1 for _, high in box.other)
        cuts.update(cut_points((*self.outside_rows, *self.outside_columns)))
        return split(regions, sorted(cuts))

    def run(self) -> None:
        egress = {a: self._decider(a, "out") for a in sorted(self.row_of)}
        ingress = {b: self._decider(b, "in") for b in sorted(self.column_of)}
        atoms = self._atoms({*egress.values(), *ingress.values()})
        lows = [low for low, _ in atoms]
        self.bits = bits = AddressBits(sorted([*self.taken, *lows]))
        atom_rows = _membership([points_within(side, lows) for side in self.outside_rows])
        atom_columns = _membership([points_within(side, lows) for side in self.outside_columns])
        self.to_rows = Sides(atom_rows, bits)
        self.to_columns = Sides({**self.column_of, **atom_columns}, bits)
        external_senders = sum(bits.bit(a) for a in atom_rows)
        external_receivers = sum(bits.bit(b) for b in atom_columns)
        senders: dict[tuple[Decider, tuple[int, ...]], _Senders] = {}
        for a, decider in egress.items():
            rows = tuple(self.row_of[a])
            group = senders.get((decider, rows))
            if group is None:
                group = senders[(decider, rows)] = _Senders(decider, rows)
            group.mask |= bits.bit(a)
        by_ingress: dict[Decider, int] = defaultdict(int)
        for b, decider in ingress.items():
            by_ingress[decider] |= bits.bit(b)
        workload_senders = sum(g.mask for g in senders.values())
        index = self._ingress_index(by_ingress, workload_senders, external_senders)
        holding: dict[int, list[int]] = defaultdict(list)  # sender bit -> sender sets
        for senders_mask in index:
            for i in positions(senders_mask):
                holding[i].append(senders_mask)
        receivers = sum(by_ingress.values()) | external_receivers
        for group in senders.values():
            self._from_senders(group, index, holding, receivers, external_receivers)
        self._external_to_external()

    def _ingress_index(
        self, by_ingress: dict[Decider, int], workload_senders: int, external_senders: int
    ) -> dict[int, dict[int, list[_Ingress]]]:
        """Ingress pieces merged by (ports, rule, senders): workload sender set -> protocol
        -> pieces, each protocol's sorted by low port. The external senders they allow
        (non-workload addresses of rows) are added to `found` on the way."""
        merged: dict[tuple[int, int, int, int, str], _Ingress] = {}
        universe = workload_senders | external_senders
        for decider, receivers in by_ingress.items():
            for p in self._allowed(decider, "in", universe):
                key = (p.mask, p.proto, p.low, p.high, p.rule)
                found = merged.get(key)
                if found is None:
                    found = merged[key] = _Ingress(p.proto, p.low, p.high, p.rule)
                found.receivers |= receivers
        index: dict[int, dict[int, list[_Ingress]]] = defaultdict(lambda: defaultdict(list))
        for (mask, proto, *_), piece in merged.items():
            if mask & external_senders:
                rows = positions(self.to_rows.of(mask & external_senders))
                ports = (proto, piece.low, piece.high)
                self.found.add(rows, self.to_columns.of(piece.receivers), ports, (piece.rule,))
            if mask & workload_senders:
                index[mask & workload_senders][proto].append(piece)
        for by_proto in index.values():
            for pieces in by_proto.values():
                pieces.sort(key=lambda p: p.low)
        return index

    def _from_senders(
        self,
        group: _Senders,
        index: dict[int, dict[int, list[_Ingress]]],
        holding: dict[int, list[int]],
        receivers: int,
        external_receivers: int,
    ) -> None:
        egress: dict[int, list[Piece]] = defaultdict(list)
        allowed: dict[int, int] = defaultdict(int)  # protocol -> receivers allowed on some port
        ports: dict[PortKey, int] = defaultdict(int)
        rules: dict[str, int] = defaultdict(int)
        for g in self._allowed(group.decider, "out", receivers):
            egress[g.proto].append(g)
            allowed[g.proto] |= g.mask
            outside_reached = g.mask & external_receivers  # nothing filters them
            if outside_reached:
                ports[(g.proto, g.low, g.high)] |= outside_reached
                rules[g.rule] |= outside_reached
        sets = {s for i in positions(group.mask) for s in holding.get(i, ())}
        by_proto: dict[int, list[tuple[_Ingress, int]]] = defaultdict(list)
        for s in sets:
            inside = group.mask & s
            for proto, pieces in index[s].items():
                wanted = allowed.get(proto, 0)
                if wanted:  # only the pieces run by receivers this group's egress allows
                    by_proto[proto].extend((h, inside) for h in pieces if h.receivers & wanted)
        for proto, hs in by_proto.items():
            gs = egress[proto]
            hs.sort(key=lambda h: h[0].low)
            for g, h, inside in _overlapping(gs, hs):
                reached = g.mask & h.receivers
                if inside & (inside - 1) == 0:  # one sender: not to itself
                    reached &= ~inside
                if reached:
                    ports[(proto, max(g.low, h.low), min(g.high, h.high))] |= reached
                    rules[g.rule] |= reached
                    rules[h.rule] |= reached
        to_columns, found = self.to_columns.of, self.found
        for key, reached in ports.items():
            found.add(group.rows, to_columns(reached), key)
        for rule, reached in rules.items():
            found.add(group.rows, to_columns(reached), None, (rule,))

    def _external_to_external(self) -> None:
        external_columns = [c for c, found in enumerate(self.outside_columns) if found]
        for r in (r for r, found in enumerate(self.outside_rows) if found):
            for c in external_columns:
                if distinct_pair(self.rows[r], self.columns[c], self.taken) is not None:
                    for proto, ranges in self.space.items():
                        for low, high in ranges:
                            self.found.add((r,), 1 << c, (proto, low, high))


def _membership(inside: Sequence[Sequence[int]]) -> dict[int, list[int]]:
    """Per value: the sides (by position) whose `inside` lists hold it."""
    found: dict[int, list[int]] = defaultdict(list)
    for i, values in enumerate(inside):
        for value in values:
            found[value].append(i)
    return found
