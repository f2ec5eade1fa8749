"""`hyperwall lint`: rules that never decide anything, rules that change nothing, `pass`
rules that pass nothing, groups that select nothing.

For every enforcement point (a workload's endpoint, one of its own addresses, a direction)
and every equivalence class of the whole packet space (every other-end address, protocol
and port), the rules that match are listed in evaluation order; the first one decides (a
`pass` on the way "passes"). What a class adds to the findings depends only on that list
and the endpoint's default (its *case*), so each distinct case is tallied once
(`analysis.lint_cases` finds them, exactly, without deciding every point and class). Then:

- unmatched: a rule that matches no packet at any point where it is enforced (its peers
  select nothing, its own side never contains the workloads it is installed on, or it is
  installed nowhere);
- shadowed: a rule that matches packets somewhere but never decides or passes any of them:
  earlier rules take every one, at every point where it is enforced (they are named);
- redundant: a rule that decides packets, but every one of them would get the same verdict
  without it (the next matching rule, or the default, agrees);
- pass-nothing: a `pass` rule that is never the first match of anything;
- empty-group: a group without any address (no member, selector match or CIDR).

Exhaustive like the checker; pure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from hyperwall.analysis.lint_cases import Act, packet_cases
from hyperwall.analysis.view import FleetView
from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.evaluator.evaluate import DEFAULT
from hyperwall.policy.model import Catalog, Verdict

Kind = Literal["unmatched", "shadowed", "redundant", "pass-nothing", "empty-group"]
KINDS: tuple[Kind, ...] = ("unmatched", "shadowed", "redundant", "pass-nothing", "empty-group")


@dataclass(frozen=True, slots=True)
class Finding:
    kind: Kind
    subject: str  # a rule id, or a group key for empty-group
    by: tuple[str, ...] = ()  # shadowed: the rules that take its packets

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"kind": self.kind, "subject": self.subject}
        if self.kind == "shadowed":
            out["shadowedBy"] = list(self.by)
        return out

    def __str__(self) -> str:
        what = {
            "unmatched": "matches no packet where it is enforced",
            "shadowed": "never decides: earlier rules take every packet it matches",
            "redundant": "changes no verdict: without it every packet is decided the same",
            "pass-nothing": "passes nothing",
            "empty-group": "selects nothing",
        }[self.kind]
        text = f"{self.subject}: {what}"
        return text + (f" (by {', '.join(self.by)})" if self.by else "")


@dataclass
class _Tally:
    matched: set[str] = field(default_factory=set)
    decided: set[str] = field(default_factory=set)
    needed: set[str] = field(default_factory=set)
    passed: set[str] = field(default_factory=set)
    shadowers: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))


def _walk(matching: Sequence[Act], skip: str | None = None) -> Iterator[Act | None]:
    """The rules that act on one class in order (passes, then the decider; None: the
    default decides), leaving out rule `skip`."""
    skipped = -1
    for act in matching:
        if act.tier == skipped or act.rule == skip:
            continue
        yield act
        if act.action != "pass":
            return
        skipped = act.tier
    yield None


def _verdict(matching: Sequence[Act], default: Verdict, skip: str | None = None) -> Verdict:
    last = list(_walk(matching, skip))[-1]
    if last is None or last.action == "pass":
        return default
    return last.action


def _count(tally: _Tally, matching: Sequence[Act], default: Verdict) -> None:
    """Tally one class: the rules that match it, in evaluation order, and the default."""
    tally.matched.update(act.rule for act in matching)
    acting = list(_walk(matching))
    decider = acting[-1]
    tally.passed.update(act.rule for act in acting if act is not None and act.action == "pass")
    took = decider.rule if decider is not None else DEFAULT
    acted = {act.rule for act in acting if act is not None}
    for act in matching:
        if act.rule not in acted:
            tally.shadowers[act.rule].add(took)
    if decider is not None:
        tally.decided.add(decider.rule)
        if decider.rule not in tally.needed and (
            _verdict(matching, default, skip=decider.rule) != decider.action
        ):
            tally.needed.add(decider.rule)


def lint(catalog: Catalog, compiler: FleetCompiler | None = None) -> list[Finding]:
    """Every finding, rules in policy order, then groups in document order."""
    view = FleetView(catalog, compiler)
    tally = _Tally()
    for default, matching in packet_cases(view):
        _count(tally, matching, default)
    findings: list[Finding] = []
    for policy in catalog.config.policies.values():
        for rule in policy.rules:
            rid = rule.id
            if rid not in tally.matched:
                findings.append(Finding("unmatched", rid))
            elif rule.action == "pass":
                if rid not in tally.passed:
                    findings.append(Finding("pass-nothing", rid))
            elif rid not in tally.decided:
                findings.append(Finding("shadowed", rid, tuple(sorted(tally.shadowers[rid]))))
            elif rid not in tally.needed:
                findings.append(Finding("redundant", rid))
    for key in catalog.config.groups:
        v4, v6 = view.compiler.groups.intervals(key)
        if not v4 and not v6:
            findings.append(Finding("empty-group", key))
    return findings
