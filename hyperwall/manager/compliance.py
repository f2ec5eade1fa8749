"""What a compliance report says about a catalog: each assertion's result with its evidence,
the reachability matrix of a tenant's groups, which documents the verdicts rest on, and the
`hyperwall lint` findings (dead, shadowed, redundant rules, empty groups) of its own
rules and groups.

Pure CPU over a `Catalog` (the manager runs it on a worker thread); the ledger part, who
changed those documents and when, is `manager.report`'s. Everything comes from the
exhaustive analyses over one `FleetView`: the assertion checker (`analysis.assertions`),
the reachability matrix (`analysis.reach`: per pair of groups the services on which some
address of one reaches another of the other, with the deciding rules) and lint
(`analysis.lint`). Never sampled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hyperwall.analysis.assertions import AssertionResult, Checker
from hyperwall.analysis.lint import Finding, lint
from hyperwall.analysis.reach import ReachMatrix, compress, group_sides, reach
from hyperwall.policy.model import AssertionDef, Catalog, Peer

MAX_GROUPS = 40  # matrix rows/columns; a larger scope is cut (the report says so)


@dataclass(frozen=True, slots=True)
class Compliance:
    assertions: list[dict[str, Any]]
    groups: list[str]
    matrix: list[list[dict[str, Any]]]  # [source][destination]
    groups_left_out: int
    documents: list[tuple[str, str | None, str]]  # (kind, tenant, name) the verdicts rest on
    lint: list[dict[str, Any]]  # `hyperwall lint` findings of the scope's rules and groups
    # (lint walks every enforcement point of the fleet, about 12 s of CPU on a
    # 10,000-workload one; a report may leave it out)


def in_scope(key_tenant: str | None, tenant: str | None) -> bool:
    """Whether an object of `key_tenant` belongs in a report of `tenant` (None: every
    object; a tenant's report: its own objects and the provider's)."""
    return tenant is None or key_tenant in (None, tenant)


def compliance(catalog: Catalog, tenant: str | None, with_lint: bool = True) -> Compliance:
    checker = Checker(catalog)
    involved: set[tuple[str, str | None, str]] = set()
    results = []
    for assertion in catalog.config.assertions.values():
        if tenant is not None and assertion.tenant != tenant:
            continue
        result = checker.check_one(assertion)
        rules = _rules(result)
        involved.update(_documents(rules, catalog, tenant))
        involved.add(("Assertion", assertion.tenant, assertion.name))
        results.append({**result.to_json(), **_describe(assertion), "evidence": list(rules)})
    sides = sorted(group_sides(checker.view, tenant), key=lambda side: side.label)
    left_out = max(0, len(sides) - MAX_GROUPS)
    sides = sides[:MAX_GROUPS]
    found = reach(checker.view, sides, sides)
    groups = [side.label for side in sides]
    matrix = [[_cell(found, src, dst) for dst in groups] for src in groups]
    findings = [
        {"kind": f.kind, "subject": f.subject, "by": list(f.by)}
        for f in (lint(catalog, checker.view.compiler) if with_lint else [])
        if tenant is None or _owner(f) == tenant
    ]
    return Compliance(results, groups, matrix, left_out, sorted(involved, key=_order), findings)


def _owner(finding: Finding) -> str | None:
    """The tenant of a lint finding's rule (`tenant/policy/rule`) or group (`tenant/name`)."""
    parts = finding.subject.split("/")
    if finding.kind == "empty-group":
        return parts[0] if len(parts) == 2 else None
    return parts[0] if len(parts) == 3 else None


def _order(key: tuple[str, str | None, str]) -> tuple[str, str, str]:
    return (key[0], key[1] or "", key[2])


def _describe(assertion: AssertionDef) -> dict[str, Any]:
    return {
        "description": assertion.description,
        "expect": assertion.expect,
        "from": [_peer(p) for p in assertion.sources] or ["any"],
        "to": [_peer(p) for p in assertion.destinations] or ["any"],
        "services": "any" if assertion.services is None else [str(s) for s in assertion.services],
    }


def _peer(peer: Peer) -> str:
    return f"{peer.kind} {peer.value}"


def _rules(result: AssertionResult) -> tuple[str, ...]:
    """The rules that decided: the evidence of a holding assertion, the counterexample's
    deciding rules of a failing one."""
    if result.counterexample is None:
        return result.evidence
    trace = result.counterexample.trace
    return tuple(sorted({d.rule for d in (trace.egress, trace.ingress) if d is not None}))


def _documents(
    rules: tuple[str, ...], catalog: Catalog, tenant: str | None
) -> set[tuple[str, str | None, str]]:
    """The Policy documents of rule ids (`tenant/policy/rule`, `policy/rule`); `default`
    rests on the Tenant's defaultAction (the report's tenant, or every tenant)."""
    out: set[tuple[str, str | None, str]] = set()
    for rule in rules:
        parts = rule.split("/")
        if len(parts) == 3:
            out.add(("Policy", parts[0], parts[1]))
        elif len(parts) == 2:
            out.add(("Policy", None, parts[0]))
        elif rule == "default":
            names = catalog.config.tenants if tenant is None else [tenant]
            out.update(("Tenant", None, name) for name in names)
    return out


def _cell(found: ReachMatrix, source: str, destination: str) -> dict[str, Any]:
    """Whether some address of group `source` reaches another of `destination`, on which
    services (`tcp/8000-8080`), and by which rules."""
    hit = found.cells.get((source, destination))
    if hit is None:
        return {"reach": False, "services": [], "rules": []}
    ports, rules = hit
    return {"reach": True, "services": compress(ports), "rules": list(rules)}
