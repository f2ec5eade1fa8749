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
compiles nothing from scratch. Apply, delete
and rollback raise `AssertionsBroken` (409 with the counterexamples, nothing committed);
diff and a dry-run apply report the same results without refusing.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

from hyperwall.analysis.assertions import AssertionResult, check_assertions, touched_assertions
from hyperwall.compiler.fleet_programs import FleetPrograms
from hyperwall.policy.model import AssertionDef, Catalog


@dataclass(frozen=True, slots=True)
class GateResult:
    """The assertions a change touched, each re-checked over the resulting catalog, and
    how long choosing and checking them took (wall clock, the trial compile included)."""

    checked: tuple[AssertionResult, ...] = ()
    seconds: float = 0.0

    @property
    def broken(self) -> tuple[AssertionResult, ...]:
        return tuple(r for r in self.checked if not r.holds)

    def to_json(self) -> dict[str, Any]:
        return {
            "checked": [r.name for r in self.checked],
            "broken": [r.to_json() for r in self.broken],
        }


def check_change(
    old: Catalog | None, new: Catalog, programs: FleetPrograms | None = None
) -> GateResult:
    """Re-check the assertions of `new` that the change from `old` touches (all of them
    when `old` is None). With `programs` (the fleet watch's, on its thread), the check
    compiles nothing from scratch: it borrows their compiler, advanced to `new`."""
    began = time.perf_counter()
    if not new.config.assertions:
        return GateResult()
    names = None if old is None else touched_assertions(old, new)
    if names is not None and not names:
        return GateResult(seconds=time.perf_counter() - began)
    return _check(new, names, programs, began)


def _check(
    catalog: Catalog,
    names: Collection[str] | None,
    programs: FleetPrograms | None,
    began: float,
) -> GateResult:
    if programs is None:
        found = tuple(check_assertions(catalog, names))
    else:
        with programs.trial(catalog) as compiler:
            found = tuple(check_assertions(catalog, names, compiler))
    return GateResult(found, time.perf_counter() - began)


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
    return _check(merged, names, programs, began)


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
