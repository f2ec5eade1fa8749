"""The assertion gate: a change is committed only if every assertion it could affect holds.

`check_change(old, new)` re-checks, over the catalog a change would produce, only the
assertions whose scope the change touches (`analysis.touched_assertions`: a workload change
touches the assertions that select it; a new or edited assertion itself; a policy, group,
service or tenant change all of them). Assertions it does not touch keep the result they had
before the change, which the gate itself established when they were last checked, so
"after this change every assertion holds" is kept from one revision to the next (the one
exception: revisions an agent commits for the workloads it discovered are not gated, see
`docs/design/manager.md`). Pure CPU: the manager runs it on the fleet watch's thread with
its compiler, advanced to the change (`FleetPrograms.trial`), so a check on a large fleet
compiles nothing from scratch. An assertion known to hold before a change of Workloads only
(`Holding`: what this manager's gate established, carried across revisions by the fleet
watch) is re-checked on the cases of the changed workloads' addresses alone
(`analysis.delta`): time in proportion to the change, not to the groups the assertion
names. Apply, delete and rollback raise `AssertionsBroken` (409 with the counterexamples,
nothing committed); diff and a dry-run apply report the same results without refusing.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from hyperwall.analysis.assertions import AssertionResult, Checker, touched_assertions
from hyperwall.analysis.delta import Rechecker, changed_addresses
from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.fleet_programs import FleetPrograms
from hyperwall.policy.model import AssertionDef, Catalog

Known = Mapping[str, AssertionDef]  # assertions known to hold, by key, as they were checked


@dataclass(frozen=True, slots=True)
class GateResult:
    """The assertions a change touched, each re-checked over the resulting catalog, how
    long choosing and checking them took (wall clock, the trial compile included), and
    which assertions are known to hold after the change (`holding`)."""

    checked: tuple[AssertionResult, ...] = ()
    seconds: float = 0.0
    holding: Known = field(default_factory=dict)

    @property
    def broken(self) -> tuple[AssertionResult, ...]:
        return tuple(r for r in self.checked if not r.holds)

    def to_json(self) -> dict[str, Any]:
        return {
            "checked": [r.name for r in self.checked],
            "broken": [r.to_json() for r in self.broken],
        }


@dataclass(frozen=True, slots=True)
class Holding:
    """The assertions known to hold at one revision of the store: those a gated commit of
    this manager checked or left untouched, carried from revision to revision by the fleet
    watch as long as no change touches them (`carried`). The gate re-checks an assertion
    known to hold, after a change of Workloads only, on the cases of the changed addresses
    alone (`analysis.delta`); anything else it checks whole."""

    revision: int = -1
    assertions: Known = field(default_factory=dict)

    def at(self, revision: int) -> Known | None:
        return self.assertions if self.revision == revision else None

    def carried(self, revision: int, old: Catalog, new: Catalog) -> Holding:
        """What is known at `revision`, reached from `old` (this one's revision) to `new`:
        the assertions the change did not touch (`touched_assertions`) and did not edit.
        From any other revision nothing is known."""
        if self.revision != revision - 1 or not self.assertions:
            return Holding(revision)
        return Holding(revision, _untouched(self.assertions, touched_assertions(old, new), new))


def _untouched(known: Known, touched: Collection[str], new: Catalog) -> Known:
    """What stays known over `new`: the known assertions a change did not touch, as `new`
    still defines them."""
    return {
        key: a
        for key, a in known.items()
        if key not in touched and new.config.assertions.get(key) == a
    }


def check_change(
    old: Catalog | None,
    new: Catalog,
    programs: FleetPrograms | None = None,
    known: Known | None = None,
) -> GateResult:
    """Re-check the assertions of `new` that the change from `old` touches (all of them
    when `old` is None). With `programs` (the fleet watch's, on its thread), the check
    compiles nothing from scratch: it borrows their compiler, advanced to `new`. `known`:
    the assertions known to hold over `old` (`Holding.at`); after a change of Workloads
    only, those are re-checked on the changed addresses' cases alone."""
    began = time.perf_counter()
    if not new.config.assertions:
        return GateResult()
    names = None if old is None else touched_assertions(old, new)
    kept = {} if names is None or not known else _untouched(known, names, new)
    if names is not None and not names:
        return GateResult(seconds=time.perf_counter() - began, holding=kept)
    addresses = None if old is None or not known else changed_addresses(old, new)
    found = _check(new, names, programs, addresses, known or {})
    holding = {**kept, **{r.name: new.config.assertions[r.name] for r in found if r.holds}}
    return GateResult(found, time.perf_counter() - began, holding)


def _check(
    catalog: Catalog,
    names: Collection[str] | None,
    programs: FleetPrograms | None,
    addresses: dict[int, tuple[int, ...]] | None,
    known: Known,
) -> tuple[AssertionResult, ...]:
    def run(compiler: FleetCompiler | None) -> tuple[AssertionResult, ...]:
        checker = Checker(catalog, compiler)
        quick = None if addresses is None else Rechecker(checker, addresses)
        out = []
        for key, a in catalog.config.assertions.items():
            if names is not None and key not in names:
                continue
            if quick is not None and known.get(key) == a:
                out.append(quick.check(a))
            else:
                out.append(checker.check_one(a))
        return tuple(out)

    if programs is None:
        return run(None)
    with programs.trial(catalog) as compiler:
        return run(compiler)


def check_rollback(
    current: Catalog, target: Catalog, programs: FleetPrograms | None = None
) -> GateResult:
    """A rollback to `target` keeps today's compliance: the target's assertions and the
    current assertions that the target lacks (a rollback to before an assertion existed
    must still satisfy it) are re-checked over the target, where the change touches them.
    A current assertion naming a group the target lacks cannot be evaluated there and is
    left out (the rollback removes it, as it removes every newer document)."""
    began = time.perf_counter()
    extra = {
        key: a
        for key, a in current.config.assertions.items()
        if key not in target.config.assertions and _resolvable(a, target)
    }
    if not target.config.assertions and not extra:
        return GateResult()
    assertions = {**target.config.assertions, **extra}
    merged = replace(target, config=replace(target.config, assertions=assertions))
    names = touched_assertions(current, merged) | set(extra)
    if not names:
        return GateResult(seconds=time.perf_counter() - began)
    found = _check(merged, names, programs, None, {})
    return GateResult(found, time.perf_counter() - began)


def _resolvable(assertion: AssertionDef, catalog: Catalog) -> bool:
    peers = (*assertion.sources, *assertion.destinations)
    return all(p.kind != "group" or p.value in catalog.config.groups for p in peers)


class AssertionsBroken(Exception):
    """A change after which assertions fail: refused with 409 and their counterexamples."""

    def __init__(self, what: str, result: GateResult) -> None:
        names = ", ".join(r.name for r in result.broken)
        super().__init__(f"{what} refused: after it these assertions fail: {names}")
        self.result = result

    def to_json(self) -> dict[str, Any]:
        return {"error": str(self), "assertions": [r.to_json() for r in self.result.broken]}
