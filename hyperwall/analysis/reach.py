"""Reachability: which groups (or workloads) reach which, on which services, and by which
rules; and what a change opens and closes.

`reach(view, rows, columns, services)` fills a matrix whose cell (row A, column B) holds
every service on which some address of A reaches some other address of B (the same family):
the union of the cases that `trace` would allow, with the rules that decided them (the
egress rule of a workload sender, the ingress rule of a workload receiver). Exhaustive like
the checker (`analysis.assertions`): the rules of every workload endpoint in play are
decided on equivalence classes (`analysis.decisions`), never sampled. How:

- every workload sender `a`: its egress cells over the columns' addresses; an allowed cell
  reaches the workload receivers `b` in it where `b`'s ingress allows `a` on those ports
  (ingress cells of each receiver are computed once and looked up by bisection), and the
  columns whose external (non-workload) addresses it contains;
- every workload receiver `b`: its allowed ingress cells bring in the rows whose external
  addresses they contain;
- external to external: nothing filters it; such a cell holds every service.

`compress` prints a cell's services as `tcp/8080-8090`, `udp/53`, `icmp/echo-request`, `tcp`
(every port) or `any`. `reach_diff(old, new)` lists per cell what a change opens and closes.
Pure.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from hyperwall.analysis.classes import (
    distinct_pair,
    intersect,
    point_outside,
    points_within,
    subtract,
)
from hyperwall.analysis.decisions import (
    PACKET_SPACE,
    PROTO_NAMES,
    Cell,
    Space,
    service_space,
)
from hyperwall.analysis.view import FAMILIES, FleetView
from hyperwall.compiler.intervals import Interval, merge, split_families
from hyperwall.compiler.inventory import Families
from hyperwall.policy.documents import check_name
from hyperwall.policy.model import Catalog, Peer
from hyperwall.policy.ports import ICMP_TYPES, ICMPV6_TYPES, PortMatch, is_inline, parse_port_spec
from hyperwall.policy.selector import SelectorSyntaxError, parse_selector

Ports = dict[int, tuple[Interval, ...]]  # protocol number -> merged ports (ICMP types)


@dataclass(frozen=True, slots=True)
class Side:
    """A row or a column: a label (`acme/web`) and the addresses it stands for."""

    label: str
    addresses: Families


@dataclass
class ReachCell:
    """What one (row, column) reaches so far: (protocol, low, high) ranges, deciding rules."""

    ports: set[tuple[int, int, int]] = field(default_factory=set)
    rules: set[str] = field(default_factory=set)

    def add(self, proto: int, ports: Interval, rules: Iterable[str]) -> None:
        self.ports.add((proto, *ports))
        self.rules.update(r for r in rules if r)

    def update(self, other: ReachCell) -> None:
        self.ports |= other.ports
        self.rules |= other.rules

    def merged(self) -> Ports:
        found: dict[int, list[Interval]] = defaultdict(list)
        for proto, low, high in self.ports:
            found[proto].append((low, high))
        return {p: merge(ranges) for p, ranges in sorted(found.items())}


def _type_name(proto: int, value: int) -> str:
    table = ICMP_TYPES if proto == 1 else ICMPV6_TYPES
    return next((n for n, v in table.items() if v == value), str(value))


def compress(ports: Ports) -> list[str]:
    """Services as text: `any` when every protocol and port of a family is in, else one
    entry per protocol and merged range (`tcp/8080-8090`; `tcp` for every port)."""
    for family in FAMILIES:
        space = PACKET_SPACE[family]
        if all(ports.get(p) == full for p, full in space.items()):
            return ["any"]
    out: list[str] = []
    for proto, ranges in sorted(ports.items(), key=lambda kv: PROTO_NAMES[kv[0]]):
        name = PROTO_NAMES[proto]
        full = PACKET_SPACE[4].get(proto) or PACKET_SPACE[6][proto]
        if ranges == full:
            out.append(name)
            continue
        for low, high in ranges:
            if proto in (1, 58):
                text = _type_name(proto, low) if low == high else f"{low}-{high}"
            else:
                text = str(low) if low == high else f"{low}-{high}"
            out.append(f"{name}/{text}")
    return out


@dataclass(frozen=True, slots=True)
class ReachMatrix:
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    cells: Mapping[tuple[str, str], tuple[Ports, tuple[str, ...]]]  # reaching cells only

    def to_json(self) -> dict[str, object]:
        return {
            "rows": list(self.rows),
            "columns": list(self.columns),
            "reach": [
                {"from": r, "to": c, "services": compress(ports), "rules": list(rules)}
                for (r, c), (ports, rules) in self.cells.items()
            ],
        }


class _Ingress:
    """A receiver's allowed ingress cells, by source class, for lookup by address."""

    def __init__(self, cells: Iterable[Cell]) -> None:
        by_class: dict[Interval, list[Cell]] = defaultdict(list)
        for cell in cells:
            if cell.verdict == "allow":
                by_class[cell.addresses].append(cell)
        self.classes = sorted(by_class)
        self.cells = [by_class[c] for c in self.classes]

    def all(self) -> list[Cell]:
        return [c for cells in self.cells for c in cells]

    def at(self, address: int) -> list[Cell]:
        i = bisect_right(self.classes, (address, 2**129)) - 1
        if i >= 0 and self.classes[i][0] <= address <= self.classes[i][1]:
            return self.cells[i]
        return []


def _overlap(a: Interval, b: Interval) -> Interval | None:
    low, high = max(a[0], b[0]), min(a[1], b[1])
    return (low, high) if low <= high else None


class _Family:
    """The matrix's cases of one address family."""

    def __init__(
        self,
        view: FleetView,
        family: int,
        rows: Sequence[tuple[Interval, ...]],
        columns: Sequence[tuple[Interval, ...]],
        space: Space,
        out: dict[tuple[int, int], ReachCell],
    ) -> None:
        self.view, self.family, self.space, self.out = view, family, space, out
        self.rows, self.columns = rows, columns
        self.taken = view.workload_ips[family]
        self.sources = merge(i for r in rows for i in r)
        self.targets = merge(i for c in columns for i in c)
        self.row_of = self._membership(rows)
        self.column_of = self._membership(columns)
        self.external_rows = [
            i for i, r in enumerate(rows) if point_outside(r, self.taken) is not None
        ]
        self.external_columns = [
            i for i, c in enumerate(columns) if point_outside(c, self.taken) is not None
        ]

    def _membership(self, sides: Sequence[tuple[Interval, ...]]) -> dict[int, list[int]]:
        found: dict[int, list[int]] = defaultdict(list)
        for i, side in enumerate(sides):
            for ip in points_within(side, self.taken):
                found[ip].append(i)
        return found

    def _cells(
        self, own: int, direction: Literal["in", "out"], targets: tuple[Interval, ...]
    ) -> list[Cell]:
        owner = self.view.owner(self.family, own)
        assert owner is not None
        decider = self.view.decider(owner, direction, self.family, own)
        others = subtract(targets, ((own, own),))
        return list(decider.cells(others, self.space, allowed_only=True))

    def run(self) -> None:
        receivers = sorted(self.column_of)
        ingress = {b: _Ingress(self._cells(b, "in", self.sources)) for b in receivers}
        # sources in the same rows are merged first, then spread over their rows once
        by_rows: dict[tuple[int, ...], dict[int, ReachCell]] = defaultdict(
            lambda: defaultdict(ReachCell)
        )
        for a in sorted(self.row_of):
            reached = by_rows[tuple(self.row_of[a])]  # column -> what these rows reach
            for cell in self._cells(a, "out", self.targets):
                self._from_workload(a, cell, receivers, ingress, reached)
        for rows, reached in by_rows.items():
            for r in rows:
                for c, found in reached.items():
                    self.out[(r, c)].update(found)
        for b in receivers:
            for cell in ingress[b].all():
                for r in self.external_rows:
                    inside = intersect((cell.addresses,), self.rows[r])
                    if point_outside(inside, self.taken, avoid=b) is not None:
                        for c in self.column_of[b]:
                            self.out[(r, c)].add(cell.proto, cell.ports, (cell.rule,))
        for r in self.external_rows:
            for c in self.external_columns:
                if distinct_pair(self.rows[r], self.columns[c], self.taken) is not None:
                    for proto, ranges in self.space.items():
                        for ports in ranges:
                            self.out[(r, c)].add(proto, ports, ())

    def _from_workload(
        self,
        a: int,
        cell: Cell,
        receivers: list[int],
        ingress: dict[int, _Ingress],
        reached: dict[int, ReachCell],
    ) -> None:
        for b in points_within((cell.addresses,), receivers):
            for back in ingress[b].at(a):
                if back.proto != cell.proto:
                    continue
                ports = _overlap(cell.ports, back.ports)
                if ports is not None:
                    for c in self.column_of[b]:
                        reached[c].add(cell.proto, ports, (cell.rule, back.rule))
        for c in self.external_columns:
            inside = intersect((cell.addresses,), self.columns[c])
            if point_outside(inside, self.taken, avoid=a) is not None:
                reached[c].add(cell.proto, cell.ports, (cell.rule,))


def reach(
    view: FleetView,
    rows: Sequence[Side],
    columns: Sequence[Side],
    services: tuple[PortMatch, ...] | None = None,
) -> ReachMatrix:
    """The reachability matrix of `rows` to `columns` on `services` (None: all)."""
    out: dict[tuple[int, int], ReachCell] = defaultdict(ReachCell)
    for i, family in enumerate(FAMILIES):
        space = service_space(services, family)
        if space:
            _Family(
                view,
                family,
                [r.addresses[i] for r in rows],
                [c.addresses[i] for c in columns],
                space,
                out,
            ).run()
    cells: dict[tuple[str, str], tuple[Ports, tuple[str, ...]]] = {}
    for (r, c), cell in sorted(out.items()):
        cells[(rows[r].label, columns[c].label)] = (cell.merged(), tuple(sorted(cell.rules)))
    return ReachMatrix(tuple(s.label for s in rows), tuple(s.label for s in columns), cells)


# -- what a change opens and closes ------------------------------------------------------


def _minus(a: Ports, b: Ports) -> Ports:
    out: Ports = {}
    for proto, ranges in a.items():
        left = subtract(ranges, b.get(proto, ()))
        if left:
            out[proto] = left
    return out


@dataclass(frozen=True, slots=True)
class ReachChange:
    source: str
    destination: str
    opened: Ports
    closed: Ports

    def to_json(self) -> dict[str, object]:
        return {
            "from": self.source,
            "to": self.destination,
            "opened": compress(self.opened) if self.opened else [],
            "closed": compress(self.closed) if self.closed else [],
        }


def reach_diff(old: ReachMatrix, new: ReachMatrix) -> list[ReachChange]:
    """Per (row, column) of either matrix: the services `new` reaches that `old` did not
    (opened) and those `old` reached that `new` does not (closed); unchanged cells left out.
    In `new`'s order, then the cells only `old` has."""
    changes: list[ReachChange] = []
    for key in [*new.cells, *(k for k in old.cells if k not in new.cells)]:
        before = old.cells.get(key, ({}, ()))[0]
        after = new.cells.get(key, ({}, ()))[0]
        opened, closed = _minus(after, before), _minus(before, after)
        if opened or closed:
            changes.append(ReachChange(key[0], key[1], opened, closed))
    return changes


# -- rows and columns --------------------------------------------------------------------


def group_sides(view: FleetView, tenant: str | None) -> list[Side]:
    """Every group (of `tenant` only, when given), in document order."""
    return [
        Side(key, view.compiler.groups.intervals(key))
        for key, g in view.catalog.config.groups.items()
        if tenant is None or g.tenant == tenant
    ]


def workload_sides(view: FleetView, tenant: str | None) -> list[Side]:
    """Every workload (of `tenant` only, when given), in name order."""
    return [
        Side(key, view.peer_addresses((Peer("workload", key),)))
        for key, w in sorted(view.catalog.workloads.items())
        if tenant is None or w.tenant == tenant
    ]


def resolve_peer(catalog: Catalog, text: str, tenant: str | None) -> Peer:
    """A `--from`/`--to` value: `group:NAME`, `workload:NAME`, `cidr:CIDR`,
    `selector:EXPR`, or a bare NAME (a group if there is one, else a workload). Names
    resolve in `tenant` first, then in provider scope. ValueError says what is wrong."""
    kind, colon, value = text.partition(":")
    if not colon:
        kind, value = "", text
    if kind == "cidr":
        try:
            split_families([value])
        except ValueError:
            raise ValueError(f"bad CIDR {value!r}: expected e.g. 10.0.0.0/8") from None
        return Peer("cidr", value)
    if kind == "selector":
        try:
            return Peer("selector", value, parse_selector(value), tenant)
        except SelectorSyntaxError as exc:
            raise ValueError(f"bad selector {value!r}: {exc}") from None
    if kind not in ("", "group", "workload"):
        raise ValueError(
            f"unknown peer kind {kind!r} in {text!r}: "
            "expected group:, workload:, cidr: or selector:"
        )
    keys = [value] if "/" in value else [f"{tenant}/{value}"] * bool(tenant) + [value]
    for k in keys:
        if kind in ("", "group") and k in catalog.config.groups:
            return Peer("group", k)
        if kind in ("", "workload") and k in catalog.workloads:
            return Peer("workload", k)
    for part in value.split("/"):
        check_name(part)
    raise ValueError(f"no {kind or 'group or workload'} {value!r}")


def resolve_services(
    catalog: Catalog, text: str | None, tenant: str | None
) -> tuple[PortMatch, ...] | None:
    """A `--service` value: inline (`tcp/8080-8090`) or a Service name (in `tenant` first,
    then provider scope); None: every service. ValueError says what is wrong."""
    if text is None:
        return None
    if is_inline(text):
        return (parse_port_spec(text),)  # PortSpecError is a ValueError
    for key in [f"{tenant}/{text}"] * bool(tenant) + [text]:
        if key in catalog.config.services:
            return catalog.config.services[key].ports
    raise ValueError(f"unknown service {text!r}: expected a Service name or e.g. tcp/443")


def sides(view: FleetView, peers: Sequence[str], tenant: str | None, workloads: bool) -> list[Side]:
    """Rows or columns: one per peer given; none given: every group (or, with `workloads`,
    every workload) of `tenant` (None: of the whole fleet). ValueError names the peer."""
    if not peers:
        return workload_sides(view, tenant) if workloads else group_sides(view, tenant)
    out = []
    for text in peers:
        peer = resolve_peer(view.catalog, text, tenant)
        out.append(Side(peer.value, view.peer_addresses((peer,))))
    return out
