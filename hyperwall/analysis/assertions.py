"""Compliance assertions: does every case of an `Assertion` get the expected verdict?

Public API (the manager's assertion gate calls it on every apply, delete and rollback):

    check_assertions(catalog, names=None, compiler=None) -> list[AssertionResult]
        Check the assertions of `catalog` (`catalog.config.assertions`), in document order;
        `names`: only those keys (`tenant/name` or `name`), unknown keys ignored.
        `compiler`: a `FleetCompiler` already over `catalog` (saves compiling the fleet).

    touched_assertions(old, new) -> frozenset[str]
        Keys of the assertions of `new` whose result may differ from their result over
        `old`: the incremental mode. A change that only adds, removes or edits Workloads
        touches the assertions whose `from` or `to` selects one of those workloads (in its
        old or new version; an absent `from`/`to` selects everything); a new or edited
        Assertion touches itself; any other change (Tenant, Group, Service, Policy) touches
        every assertion. See docs/design/analysis.md for why this is sound.

    Checker(catalog, compiler=None)
        The same over a reusable `FleetView`: `.check(names)`.

    AssertionResult: name (the key), holds, counterexample (None when it holds), evidence
    (the rules that decided the checked cases the expected way, sorted), `to_json()` as
    `hyperwall verify --json` prints one entry:
        {"name": "acme/pci-only-from-app", "holds": false,
         "counterexample": {"from": "10.1.0.21", "to": "10.1.0.41", "service": "tcp/5432",
                            "trace": {...what trace --json prints...}}}

How: for each address family, the `from` and `to` addresses and the assertion's services
are cut into equivalence classes by every boundary that the rules at the endpoints in play
look at (`analysis.decisions`, `analysis.classes`), and one representative per class is
decided: exhaustive, never sampled. A case's verdict is that of `trace`: the sender's egress
(if the sender is a workload) and the receiver's ingress (if the receiver is one), so an
`allow` assertion splits into one check per end, and a `deny` assertion needs a case allowed
at both ends (or an external-to-external case, which nothing filters). The counterexample is
run through `analysis.trace` itself, so `hyperwall trace` replays it exactly.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Literal

from hyperwall.analysis.classes import distinct_pair, point_outside, points_within, without
from hyperwall.analysis.decisions import Cell, Decider, Space, allowed_port, service_space
from hyperwall.analysis.scope import touched_assertions
from hyperwall.analysis.trace import End, TraceResult, trace_ends
from hyperwall.analysis.view import FAMILIES, FleetView, address_text
from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.intervals import Interval, contains
from hyperwall.policy.model import AssertionDef, Catalog

__all__ = [
    "AssertionResult",
    "Checker",
    "Counterexample",
    "check_assertions",
    "touched_assertions",
]


@dataclass(frozen=True, slots=True)
class Counterexample:
    source: str
    destination: str
    service: str
    trace: TraceResult

    def to_json(self) -> dict[str, object]:
        return {
            "from": self.source,
            "to": self.destination,
            "service": self.service,
            "trace": self.trace.to_json(),
        }


@dataclass(frozen=True, slots=True)
class AssertionResult:
    name: str
    holds: bool
    expect: Literal["allow", "deny"]
    description: str
    counterexample: Counterexample | None
    evidence: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "holds": self.holds,
            "counterexample": None
            if self.counterexample is None
            else self.counterexample.to_json(),
        }


# A failing case: (family, source, destination, protocol, port), found by the search.
_Case = tuple[int, int, int, int, int]


class _Search:
    """One assertion in one family: its sets, and the evidence gathered.

    The members of a group usually run the same rules, so their endpoints share one
    `Decider` (`analysis.view`, by content); an endpoint outside the targets it is asked
    about then gets exactly the cells its decider gives every other such endpoint, so
    those cells (and the evidence they add) are computed once per decider and search."""

    def __init__(
        self,
        view: FleetView,
        family: int,
        sources: tuple[Interval, ...],
        destinations: tuple[Interval, ...],
        space: Space,
    ) -> None:
        self.view = view
        self.family = family
        self.sources = sources
        self.destinations = destinations
        self.space = space
        self.evidence: set[str] = set()
        self.taken = view.workload_ips[family]
        # (decider, direction, only) -> the decider (so that its id stays its own while
        # the entry lives), its cells over the other side, the rules deciding the rest
        self._shared: dict[tuple[int, str, str], tuple[Decider, list[Cell], set[str]]] = {}
        self._deciders: dict[tuple[int, str], Decider] = {}

    def _decider(self, own: int, direction: Literal["in", "out"]) -> Decider:
        found = self._deciders.get((own, direction))
        if found is None:  # (`deny`'s pair checks ask for the same sources again and again)
            owner = self.view.owner(self.family, own)
            assert owner is not None
            found = self.view.decider(owner, direction, self.family, own)
            self._deciders[(own, direction)] = found
        return found

    def _cells(
        self, own: int, direction: Literal["in", "out"], only: Literal["allowed", "denied"]
    ) -> Iterable[Cell]:
        """The cells of `own`'s endpoint over the other side (`to` at egress, `from` at
        ingress; minus `own`) with the verdict `only`; the rules deciding the others go
        into the evidence."""
        decider = self._decider(own, direction)
        targets = self.destinations if direction == "out" else self.sources
        if contains(targets, own):
            others = without(targets, own)
            return decider.cells(others, self.space, only=only, others=self.evidence)
        key = (id(decider), direction, only)
        found = self._shared.get(key)
        if found is None:
            rules: set[str] = set()
            cells = list(decider.cells(targets, self.space, only=only, others=rules))
            found = self._shared[key] = (decider, cells, rules)
        self.evidence |= found[2]
        return found[1]

    def allow(self) -> _Case | None:
        """A case that is not allowed: one end denies it."""
        f = self.family
        for a in points_within(self.sources, self.taken):
            for cell in self._cells(a, "out", "denied"):
                return f, a, cell.addresses[0], cell.proto, cell.ports[0]
        for b in points_within(self.destinations, self.taken):
            for cell in self._cells(b, "in", "denied"):
                return f, cell.addresses[0], b, cell.proto, cell.ports[0]
        return None

    def deny(self) -> _Case | None:
        """A case that is allowed: at both ends, or at the one end that is a workload, or
        between two external addresses."""
        f, taken = self.family, self.taken
        external = distinct_pair(self.sources, self.destinations, taken)
        if external is not None:
            proto, ports = next(iter(self.space.items()))
            return f, *external, proto, ports[0][0]
        for b in points_within(self.destinations, taken):
            for cell in self._cells(b, "in", "allowed"):
                found = self._allowed_from(cell, b)
                if found is not None:
                    return found
        for a in points_within(self.sources, taken):
            for cell in self._cells(a, "out", "allowed"):
                d = point_outside((cell.addresses,), taken)
                if d is not None:
                    return f, a, d, cell.proto, cell.ports[0]
        return None

    def _allowed_from(self, cell: Cell, b: int) -> _Case | None:
        """A source in `cell` (allowed at `b`'s ingress) that its own egress allows too."""
        f = self.family
        s = point_outside((cell.addresses,), self.taken)
        if s is not None:
            return f, s, b, cell.proto, cell.ports[0]
        for a in points_within((cell.addresses,), self.taken):
            port = self._egress_allows(a, b, cell.proto, cell.ports)
            if port is not None:
                return f, a, b, cell.proto, port
        return None

    def _egress_allows(self, a: int, b: int, proto: int, ports: Interval) -> int | None:
        """The lowest port of `ports` on which `a`'s egress allows `b`; None if none. It
        gathers no evidence: when the search finds no case, `deny`'s pass over the sources
        has decided every such case of `a` (b is in `to`, the ports in the assertion's
        services) and added its rules."""
        if a == b:
            return None
        for decided in self._decider(a, "out").decided_at(b, self.space):
            port = allowed_port(decided, proto, ports)
            if port is not None:
                return port
        return None


class Checker:
    """Checks assertions over one catalog; see the module docstring."""

    def __init__(self, catalog: Catalog, compiler: FleetCompiler | None = None) -> None:
        self.catalog = catalog
        self.view = FleetView(catalog, compiler)

    def check(self, names: Collection[str] | None = None) -> list[AssertionResult]:
        wanted = None if names is None else set(names)
        return [
            self.check_one(a)
            for key, a in self.catalog.config.assertions.items()
            if wanted is None or key in wanted
        ]

    def check_one(self, assertion: AssertionDef) -> AssertionResult:
        sources = self.view.peer_addresses(assertion.sources)
        destinations = self.view.peer_addresses(assertion.destinations)
        evidence: set[str] = set()
        case: _Case | None = None
        for i, family in enumerate(FAMILIES):
            space = service_space(assertion.services, family)
            if not space or not sources[i] or not destinations[i]:
                continue
            search = _Search(self.view, family, sources[i], destinations[i], space)
            case = search.allow() if assertion.expect == "allow" else search.deny()
            evidence |= search.evidence
            if case is not None:
                break
        counterexample = None if case is None else self._counterexample(assertion, case)
        return AssertionResult(
            name=assertion.key,
            holds=case is None,
            expect=assertion.expect,
            description=assertion.description,
            counterexample=counterexample,
            evidence=tuple(sorted(evidence)) if case is None else (),
        )

    def _counterexample(self, assertion: AssertionDef, case: _Case) -> Counterexample:
        family, src, dst, proto, port = case
        cell = Cell((dst, dst), proto, (port, port), "allow", "")
        source, destination = self._end(family, src), self._end(family, dst)
        result = trace_ends(self.catalog, source, destination, cell.service(), self.view.compiler)
        # The trace is the evaluator's own answer: it must confirm the search.
        if (result.verdict == "allow") != (assertion.expect == "deny"):
            raise AssertionError(
                f"checker and trace disagree on {assertion.key}: {source.address} -> "
                f"{destination.address} {cell.service()} traced {result.verdict}"
            )
        return Counterexample(source.address, destination.address, cell.service(), result)

    def _end(self, family: int, value: int) -> End:
        """An address as `trace` resolves it, from the view's address index (not a scan
        of every workload)."""
        owner = self.view.owner(family, value)
        address = address_text(family, value)
        if owner is None:
            return End(address, None, None)
        return End(address, self.catalog.workloads[owner.workload], owner.endpoint.interface)


def check_assertions(
    catalog: Catalog,
    names: Collection[str] | None = None,
    compiler: FleetCompiler | None = None,
) -> list[AssertionResult]:
    """Check the assertions of `catalog` (only `names`, if given), in document order."""
    return Checker(catalog, compiler).check(names)
