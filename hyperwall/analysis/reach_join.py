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

- senders are grouped by (egress decider, rows they are in): `Senders`; receivers by
  ingress decider; ingress pieces that are alike (ports, rule, senders) are merged and
  indexed by their sender set, and a sender group looks up only the sender sets that hold
  one of its members;
- what a sender group reaches is kept per port range and per rule as a mask of receivers,
  turned into a mask of columns once per group (`Columns`), and OR-ed into its rows
  (`Found`: per row, per port range and per rule, the columns as a mask);
- external (non-workload) addresses of a row or column are as before unfiltered at their
  end: a workload's allowed egress cells that hold one reach that column; a workload's
  allowed ingress cells that hold one bring in that row; external to external reaches on
  every service.

Pure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from hyperwall.analysis.classes import distinct_pair, intersect, point_outside, points_within
from hyperwall.analysis.decisions import Decider, Space, members
from hyperwall.analysis.masks import AddressBits, Piece, allowed_pieces
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


class Columns:
    """Masks of receivers turned into masks of the columns they are in (kept per mask)."""

    def __init__(self, column_of: dict[int, list[int]], bits: AddressBits) -> None:
        self.of_bit: dict[int, int] = {}
        for value, cols in column_of.items():
            self.of_bit[bits.position[value]] = sum(1 << c for c in set(cols))
        self._kept: dict[int, int] = {}

    def of(self, receivers: int) -> int:
        found = self._kept.get(receivers)
        if found is None:
            found = 0
            of_bit = self.of_bit
            for i in members(receivers):
                found |= of_bit[i]
            self._kept[receivers] = found
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
    values: list[int] = field(default_factory=list)


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
        self.taken = view.workload_ips[family]
        self.bits = AddressBits(self.taken)
        self.row_of = self._membership(rows)
        self.column_of = self._membership(columns)
        self.to_columns = Columns(self.column_of, self.bits)
        self.external_rows = [
            i for i, r in enumerate(rows) if point_outside(r, self.taken) is not None
        ]
        self.external_columns = [
            i for i, c in enumerate(columns) if point_outside(c, self.taken) is not None
        ]
        self._pieces: dict[tuple[Decider, str], list[Piece]] = {}

    def _membership(self, sides: Sequence[tuple[Interval, ...]]) -> dict[int, list[int]]:
        found: dict[int, list[int]] = defaultdict(list)
        for i, side in enumerate(sides):
            for ip in points_within(side, self.taken):
                found[ip].append(i)
        return found

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

    def run(self) -> None:
        bits = self.bits
        senders: dict[tuple[Decider, tuple[int, ...]], _Senders] = {}
        all_senders = 0
        for a in sorted(self.row_of):
            rows = tuple(self.row_of[a])
            decider = self._decider(a, "out")
            group = senders.get((decider, rows))
            if group is None:
                group = senders[(decider, rows)] = _Senders(decider, rows)
            group.mask |= bits.bit(a)
            group.values.append(a)
            all_senders |= bits.bit(a)
        by_ingress: dict[Decider, int] = defaultdict(int)
        for b in sorted(self.column_of):
            by_ingress[self._decider(b, "in")] |= bits.bit(b)
        all_receivers = sum(by_ingress.values())
        ingress = self._ingress_index(by_ingress, all_senders)
        holding: dict[int, list[int]] = defaultdict(list)  # sender bit -> sender sets
        for senders_mask in ingress:
            for i in members(senders_mask):
                holding[i].append(senders_mask)
        for group in senders.values():
            self._from_senders(group, ingress, holding, all_receivers)
        self._from_external_rows(by_ingress)
        self._external_to_external()

    def _ingress_index(
        self, by_ingress: dict[Decider, int], universe: int
    ) -> dict[int, dict[int, list[_Ingress]]]:
        """Ingress pieces merged by (ports, rule, senders): sender set -> protocol ->
        pieces, each protocol's sorted by low port."""
        merged: dict[tuple[int, int, int, int, str], _Ingress] = {}
        for decider, receivers in by_ingress.items():
            for p in self._allowed(decider, "in", universe):
                key = (p.mask, p.proto, p.low, p.high, p.rule)
                found = merged.get(key)
                if found is None:
                    found = merged[key] = _Ingress(p.proto, p.low, p.high, p.rule)
                found.receivers |= receivers
        index: dict[int, dict[int, list[_Ingress]]] = defaultdict(lambda: defaultdict(list))
        for (mask, proto, *_), piece in merged.items():
            index[mask][proto].append(piece)
        for by_proto in index.values():
            for pieces in by_proto.values():
                pieces.sort(key=lambda p: p.low)
        return index

    def _from_senders(
        self,
        group: _Senders,
        ingress: dict[int, dict[int, list[_Ingress]]],
        holding: dict[int, list[int]],
        all_receivers: int,
    ) -> None:
        sets = {s for i in members(group.mask) for s in holding.get(i, ())}
        by_proto: dict[int, list[tuple[_Ingress, int]]] = defaultdict(list)
        for s in sets:
            inside = group.mask & s
            for proto, pieces in ingress[s].items():
                by_proto[proto].extend((h, inside) for h in pieces)
        egress: dict[int, list[Piece]] = defaultdict(list)
        for g in self._allowed(group.decider, "out", all_receivers):
            egress[g.proto].append(g)
        ports: dict[PortKey, int] = defaultdict(int)
        rules: dict[str, int] = defaultdict(int)
        for proto, hs in by_proto.items():
            gs = egress.get(proto)
            if not gs:
                continue
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
        self._to_external_columns(group)

    def _to_external_columns(self, group: _Senders) -> None:
        if not self.external_columns:
            return
        targets = merge(i for c in self.external_columns for i in self.columns[c])
        for cell in group.decider.cells(targets, self.space, allowed_only=True):
            for c in self.external_columns:
                inside = intersect((cell.addresses,), self.columns[c])
                if point_outside(inside, self.taken) is not None:
                    key = (cell.proto, *cell.ports)
                    self.found.add(group.rows, 1 << c, key, (cell.rule,))

    def _from_external_rows(self, by_ingress: dict[Decider, int]) -> None:
        if not self.external_rows:
            return
        sources = merge(i for r in self.external_rows for i in self.rows[r])
        for decider, receivers in by_ingress.items():
            columns = self.to_columns.of(receivers)
            for cell in decider.cells(sources, self.space, allowed_only=True):
                for r in self.external_rows:
                    inside = intersect((cell.addresses,), self.rows[r])
                    if point_outside(inside, self.taken) is not None:
                        self.found.add((r,), columns, (cell.proto, *cell.ports), (cell.rule,))

    def _external_to_external(self) -> None:
        for r in self.external_rows:
            for c in self.external_columns:
                if distinct_pair(self.rows[r], self.columns[c], self.taken) is not None:
                    for proto, ranges in self.space.items():
                        for low, high in ranges:
                            self.found.add((r,), 1 << c, (proto, low, high))
