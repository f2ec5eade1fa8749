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

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from hyperwall.analysis.classes import subtract
from hyperwall.analysis.decisions import PACKET_SPACE, PROTO_NAMES, service_space
from hyperwall.analysis.masks import positions
from hyperwall.analysis.reach_join import FamilyJoin, Found
from hyperwall.analysis.view import FAMILIES, FleetView
from hyperwall.compiler.intervals import Interval, split_families
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


def reach(
    view: FleetView,
    rows: Sequence[Side],
    columns: Sequence[Side],
    services: tuple[PortMatch, ...] | None = None,
) -> ReachMatrix:
    """The reachability matrix of `rows` to `columns` on `services` (None: all)."""
    found = Found.empty(len(rows))
    for i, family in enumerate(FAMILIES):
        space = service_space(services, family)
        if space:
            FamilyJoin(
                view,
                family,
                [r.addresses[i] for r in rows],
                [c.addresses[i] for c in columns],
                space,
                found,
            ).run()
    cells: dict[tuple[str, str], tuple[Ports, tuple[str, ...]]] = {}
    for r, row in enumerate(rows):
        ports: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
        for key, reached in sorted(found.ports[r].items()):  # each column's keys sorted
            for c in positions(reached):
                ports[c].append(key)
        rules: dict[int, list[str]] = defaultdict(list)
        for rule, reached in sorted(found.rules[r].items()):
            for c in positions(reached):
                rules[c].append(rule)
        for c in sorted(ports):
            cells[(row.label, columns[c].label)] = (_merged(ports[c]), tuple(rules[c]))
    return ReachMatrix(tuple(s.label for s in rows), tuple(s.label for s in columns), cells)


def _merged(keys: Iterable[tuple[int, int, int]]) -> Ports:
    """Sorted (protocol, low, high) keys as merged ranges per protocol, in one pass."""
    found: dict[int, list[Interval]] = {}
    for proto, low, high in keys:
        ranges = found.get(proto)
        if ranges is None:
            found[proto] = [(low, high)]
        elif low <= ranges[-1][1] + 1:
            if high > ranges[-1][1]:
                ranges[-1] = (ranges[-1][0], high)
        else:
            ranges.append((low, high))
    return {proto: tuple(ranges) for proto, ranges in found.items()}


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
