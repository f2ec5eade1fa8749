"""Re-checking an assertion that held before a change of Workloads: only the cases that involve
an address of a changed workload.

    changed_addresses(old, new) -> dict[int, tuple[int, ...]] | None
        Per family, every address of a workload added, removed or edited (its old and its
        new version); None if the change is not Workloads only (a Tenant, Group, Service or
        Policy changed: any rule may have moved).

    Rechecker(checker, addresses).check(assertion) -> AssertionResult
        Whether `assertion` holds over `checker`'s catalog (the new one), given that it held
        over the catalog before a Workloads-only change whose `changed_addresses` are
        `addresses`. A failure found is a counterexample replayed through `trace`, as
        `Checker.check_one` gives it. One Rechecker per change: what it derives about the
        changed addresses is shared by the assertions it checks.

Why only those cases. A case is (source address s, destination d, service). Its verdict is
the egress decision of s's endpoint for d (if s is a workload's) and the ingress decision of
d's endpoint for s (if d is a workload's), and the assertion asks about it if s is in `from`
and d in `to`. A change of Workloads only alters: the endpoints of the changed workloads;
which workloads own which addresses (only the changed workloads' addresses); and the address
sets that rules and the assertion name (group members, selectors), only at the changed
workloads' addresses. Every other endpoint runs the same policies (its labels did not
change) whose own and other-end sets differ only at those addresses. So a case with neither
s nor d among the changed addresses has the same verdict and is asked about exactly as
before; the assertion held before, so it holds for every such case. What is left are the
cases with s or d among the changed addresses (in the new catalog), which are few: for each
changed address x, the cases from x (x's own egress over `to`, and every receiver's ingress
decision at the single address x) and the cases to x (x's ingress over `from`, every
sender's egress at x). Endpoints' decisions at one address are read from their chains' boxes
that hold that address (found once per chain, `_AtAddress`), not from a sweep of their
classes: a label change recompiles the chains of every group the workload entered or left,
and sweeping the endpoints that run them was the cost of the full re-check.

The caller must know that the assertion held before (the manager's gate keeps that per
revision, `manager.gate`); the property test `tests/analysis/test_delta.py` compares
`recheck` with a full check on random fleets after random workload edits. Pure.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from hyperwall.analysis.assertions import AssertionResult, Checker
from hyperwall.analysis.classes import point_outside, points_within, without
from hyperwall.analysis.decisions import (
    Decided,
    Decider,
    RuleBox,
    Space,
    allowed_port,
    as_boxes,
    decide_all,
    endpoint_boxes,
    own_boxes,
    service_space,
)
from hyperwall.analysis.scope import changed_workloads, same_policy
from hyperwall.analysis.view import FAMILIES, FleetView
from hyperwall.compiler.intervals import Interval, address_interval, contains
from hyperwall.policy.model import AssertionDef, Catalog

# A failing case: (family, source, destination, protocol, port), as the checker finds them.
_Case = tuple[int, int, int, int, int]


def changed_addresses(old: Catalog, new: Catalog) -> dict[int, tuple[int, ...]] | None:
    """See the module docstring."""
    if not same_policy(old.config, new.config):
        return None
    found: dict[int, set[int]] = {f: set() for f in FAMILIES}
    for w in changed_workloads(old, new):
        for ip in w.ips():
            family, (value, _) = address_interval(ip)
            found[family].add(value)
    return {f: tuple(sorted(values)) for f, values in found.items()}


class _AtAddress:
    """Decisions of any endpoint for one other-end address `x`: each chain's boxes that hold
    `x`, found once, and each resulting selection decided once (the members of a group run
    the same chains)."""

    def __init__(self, view: FleetView, family: int, x: int) -> None:
        self.view, self.family, self.x = view, family, x
        self._chains: dict[tuple[str, str], list[RuleBox]] = {}
        self._decided: dict[tuple[object, ...], list[Decided]] = {}

    def _holding(self, name: str, direction: Literal["in", "out"]) -> list[RuleBox]:
        key = (name, direction)
        found = self._chains.get(key)
        if found is None:
            found = self._chains[key] = [
                rb
                for rb in self.view.chain_boxes(name, direction, self.family)
                if contains(rb.other, self.x)
            ]
        return found

    def decisions(self, own: int, direction: Literal["in", "out"], space: Space) -> list[Decided]:
        """What `own`'s endpoint decides in `direction` for the other end `x`, per protocol
        and port class of `space`."""
        owner = self.view.owner(self.family, own)
        assert owner is not None
        selected: list[tuple[int, RuleBox]] = []
        for tier, chains in enumerate(owner.endpoint.dispatch(direction)):
            for name in chains:
                selected.extend((tier, rb) for rb in own_boxes(self._holding(name, direction), own))
        default = owner.endpoint.default
        key = (id(space), default, *((tier, id(rb)) for tier, rb in selected))
        found = self._decided.get(key)
        if found is None:
            boxes = as_boxes(selected)
            found = self._decided[key] = decide_all(boxes, (1 << len(boxes)) - 1, default, space)
        return found


class _Changed:
    """The cases of one assertion in one family that involve a changed address."""

    def __init__(
        self,
        shared: Rechecker,
        family: int,
        sources: tuple[Interval, ...],
        destinations: tuple[Interval, ...],
        space: Space,
    ) -> None:
        self.shared, self.view, self.family, self.space = shared, shared.view, family, space
        self.sources, self.destinations = sources, destinations
        self.taken = self.view.workload_ips[family]

    def _own_cells(
        self, x: int, direction: Literal["in", "out"], only: Literal["allowed", "denied"]
    ) -> Iterator[tuple[Interval, int, Interval]]:
        """`x`'s own endpoint's cells over the other side (minus x) with verdict `only`:
        (addresses, protocol, ports); none if x is not a workload's address."""
        decider = self.shared.own(self.family, x, direction)
        if decider is None:
            return
        targets = self.destinations if direction == "out" else self.sources
        for cell in decider.cells(without(targets, x), self.space, only=only):
            yield cell.addresses, cell.proto, cell.ports

    def deny(self, x: int) -> _Case | None:
        """A case from or to `x` that is allowed."""
        return self._allowed(x, out=True) or self._allowed(x, out=False)

    def allow(self, x: int) -> _Case | None:
        """A case from or to `x` that one end denies."""
        return self._denied(x, out=True) or self._denied(x, out=False)

    def _sides(
        self, out: bool
    ) -> tuple[
        tuple[Interval, ...], tuple[Interval, ...], Literal["in", "out"], Literal["in", "out"]
    ]:
        """x's side and the other side, x's direction and the other end's: `out` for the
        cases from x (x the source), else the cases to x."""
        if out:
            return self.sources, self.destinations, "out", "in"
        return self.destinations, self.sources, "in", "out"

    def _case(self, x: int, other: int, out: bool, proto: int, port: int) -> _Case:
        return (self.family, x, other, proto, port) if out else (self.family, other, x, proto, port)

    def _allowed(self, x: int, out: bool) -> _Case | None:
        """A case from x (`out`) or to x that both ends allow (or the one that filters)."""
        mine, theirs, own_way, their_way = self._sides(out)
        if not contains(mine, x):
            return None
        f, taken, space = self.family, self.taken, self.space
        at = self.shared.at(f, x)
        if self.view.owner(f, x) is None:  # x is no workload's (any more): unfiltered there
            e = point_outside(theirs, taken, avoid=x)
            if e is not None:
                proto, ranges = next(iter(space.items()))
                return self._case(x, e, out, proto, ranges[0][0])
            for b in points_within(theirs, taken):
                for p, ports, verdict, _ in at.decisions(b, their_way, space):
                    if b != x and verdict == "allow":
                        return self._case(x, b, out, p, ports[0])
        for addresses, proto, ports in self._own_cells(x, own_way, "allowed"):
            e = point_outside((addresses,), taken)
            if e is not None:
                return self._case(x, e, out, proto, ports[0])
            for b in points_within((addresses,), taken):
                for decided in at.decisions(b, their_way, space):
                    port = allowed_port(decided, proto, ports)
                    if port is not None:
                        return self._case(x, b, out, proto, port)
        return None

    def _denied(self, x: int, out: bool) -> _Case | None:
        """A case from x (`out`) or to x that one end denies."""
        mine, theirs, own_way, their_way = self._sides(out)
        if not contains(mine, x):
            return None
        at = self.shared.at(self.family, x)
        for addresses, proto, ports in self._own_cells(x, own_way, "denied"):
            return self._case(x, addresses[0], out, proto, ports[0])
        for b in points_within(theirs, self.taken):
            for p, ports, verdict, _ in at.decisions(b, their_way, self.space):
                if b != x and verdict != "allow":
                    return self._case(x, b, out, p, ports[0])
        return None


class Rechecker:
    """Re-checks assertions after one change (see the module docstring): `check(a)` for
    each. What it derives about the changed addresses is shared between the assertions:
    each one's own endpoint decider, and every chain's boxes that hold it."""

    def __init__(self, checker: Checker, addresses: dict[int, tuple[int, ...]]) -> None:
        self.checker, self.view, self.addresses = checker, checker.view, addresses
        self._own: dict[tuple[int, int, str], Decider | None] = {}
        self._at: dict[tuple[int, int], _AtAddress] = {}
        self._spaces: dict[tuple[object, ...], Space] = {}  # one object per distinct space

    def own(self, family: int, x: int, direction: Literal["in", "out"]) -> Decider | None:
        """`x`'s own endpoint's decider (None: x is no workload's), built from its boxes:
        the view's cached one is not wanted, x's endpoint just changed."""
        key = (family, x, direction)
        if key not in self._own:
            owner = self.view.owner(family, x)
            self._own[key] = (
                None
                if owner is None
                else Decider(
                    as_boxes(
                        endpoint_boxes(
                            owner.endpoint,
                            direction,
                            x,
                            lambda name: self.view.chain_boxes(name, direction, family),
                        )
                    ),
                    owner.endpoint.default,
                    family,
                )
            )
        return self._own[key]

    def at(self, family: int, x: int) -> _AtAddress:
        found = self._at.get((family, x))
        if found is None:
            found = self._at[(family, x)] = _AtAddress(self.view, family, x)
        return found

    def check(self, assertion: AssertionDef) -> AssertionResult:
        """Whether `assertion`, which held before the change, holds after it."""
        view = self.view
        sources = view.peer_addresses(assertion.sources)
        destinations = view.peer_addresses(assertion.destinations)
        case: _Case | None = None
        for i, family in enumerate(FAMILIES):
            wanted = service_space(assertion.services, family)
            if not wanted or not sources[i] or not destinations[i]:
                continue
            if not self.addresses.get(family):
                continue
            space = self._spaces.setdefault(tuple(sorted(wanted.items())), wanted)
            search = _Changed(self, family, sources[i], destinations[i], space)
            for x in self.addresses[family]:
                case = search.allow(x) if assertion.expect == "allow" else search.deny(x)
                if case is not None:
                    break
            if case is not None:
                break
        return AssertionResult(
            name=assertion.key,
            holds=case is None,
            expect=assertion.expect,
            description=assertion.description,
            counterexample=None if case is None else self.checker._counterexample(assertion, case),
            evidence=(),
        )
