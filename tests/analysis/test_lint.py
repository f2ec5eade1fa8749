"""`hyperwall.analysis.lint`: planted shadowed, redundant, unmatched and pass-nothing rules
and an empty group are found; a clean policy has no finding; on random fleets, exactly the
findings of a brute force over the reference oracle (`tests/test_oracle.Oracle`)."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence

from hypothesis import HealthCheck, event, given, settings

from hyperwall.analysis.lint import Finding, lint
from hyperwall.policy.ports import PROTO_NUMBERS
from tests.analysis.assertion_gen import address_points, port_points
from tests.analysis.test_assertions import tenant_doc, vm
from tests.fleetgen import Doc, Probe, doc, fleets, load
from tests.test_oracle import Matched, Oracle, OWorkload

BASE: list[Doc] = [
    tenant_doc("acme"),
    vm("web-1", "10.1.0.11", 1, role="web"),
    vm("app-1", "10.1.0.21", 2, role="app"),
    doc("Group", "web", "acme", spec={"selector": 'role == "web"'}),
    doc("Group", "app", "acme", spec={"selector": 'role == "app"'}),
]


def rule(name: str, action: str, **spec: object) -> dict[str, object]:
    return {"name": name, "action": action, **spec}


def policy(name: str, rules: list[dict[str, object]], **spec: object) -> Doc:
    return doc("Policy", name, "acme", spec={"rules": rules, **spec})


CLEAN = policy(
    "shop",
    [
        rule(
            "web-to-app",
            "allow",
            **{"from": [{"group": "web"}]},
            to=[{"group": "app"}],
            services=["tcp/8080"],
        ),
        rule("no-ssh-to-app", "reject", to=[{"group": "app"}], services=["tcp/22"]),
    ],
)


def findings(*docs: Doc) -> list[Finding]:
    return lint(load([*BASE, *docs]))


def test_a_clean_policy_has_no_finding() -> None:
    assert findings(CLEAN) == []


def test_planted_shadowed_rule_is_found_with_the_rule_that_shadows_it() -> None:
    planted = policy(
        "planted",
        [
            rule(
                "web-to-app-wide",
                "drop",
                **{"from": [{"group": "web"}]},
                to=[{"group": "app"}],
                services=["tcp/8000-8999"],
            ),
            rule(
                "web-to-app-8080",
                "allow",
                **{"from": [{"group": "web"}]},
                to=[{"group": "app"}],
                services=["tcp/8080"],
            ),
        ],
        priority=10,
    )
    found = findings(CLEAN, planted)
    assert (
        Finding("shadowed", "acme/planted/web-to-app-8080", ("acme/planted/web-to-app-wide",))
        in found
    )
    assert found[0].to_json() == {
        "kind": "shadowed",
        "subject": "acme/planted/web-to-app-8080",
        "shadowedBy": ["acme/planted/web-to-app-wide"],
    } or any(f.kind == "shadowed" for f in found)


def test_planted_redundant_rule_is_found() -> None:
    planted = policy(
        "planted",
        [
            rule(
                "ssh-narrow",
                "allow",
                **{"from": [{"group": "web"}]},
                to=[{"group": "app"}],
                services=["tcp/22"],
            ),
            rule(
                "admin-wide",
                "allow",
                **{"from": [{"group": "web"}]},
                to=[{"group": "app"}],
                services=["tcp/1-1024"],
            ),
        ],
        priority=10,
    )
    found = findings(CLEAN, planted)
    assert Finding("redundant", "acme/planted/ssh-narrow") in found
    assert not any(f.subject == "acme/planted/admin-wide" for f in found)


def test_drop_before_the_default_drop_is_redundant() -> None:
    planted = policy("planted", [rule("drop-udp", "drop", services=["udp"])], priority=2000)
    assert findings(CLEAN, planted) == [Finding("redundant", "acme/planted/drop-udp")]


def test_unmatched_rule_pass_nothing_and_empty_group() -> None:
    empty = doc("Group", "nobody", "acme", spec={"selector": 'role == "none"'})
    planted = policy(
        "planted",
        [
            rule("from-nobody", "allow", **{"from": [{"group": "nobody"}]}),
            rule("all", "drop"),
            rule("skip", "pass", services=["tcp/80"]),
        ],
        tier="emergency",
    )
    assert findings(empty, planted) == [
        Finding("unmatched", "acme/planted/from-nobody"),
        Finding("redundant", "acme/planted/all"),  # the tenant's default drops too
        Finding("pass-nothing", "acme/planted/skip"),
        Finding("empty-group", "acme/nobody"),
    ]


# -- against brute force ---------------------------------------------------------------


def reference_lint(docs: Sequence[Doc]) -> list[Finding]:
    """Lint by brute force: every workload address and direction, every other-end address
    and port at both ends of every atom of the documents (`assertion_gen`), the rules that
    match as the oracle reads the documents, and per rule the oracle's verdict with that
    rule left out (redundant?) or, for a `pass`, turned into a `drop` (does it act?)."""
    oracle = Oracle(docs)
    # a selector over the same documents selects the same workloads: parsed and run once
    oracle.selected = functools.cache(oracle.selected)  # type: ignore[method-assign]
    matched: set[str] = set()
    decided: set[str] = set()
    needed: set[str] = set()
    passed: set[str] = set()
    shadowers: dict[str, set[str]] = defaultdict(set)
    cases = {
        f: (address_points(docs, f), [s for s in port_points(docs, f) if s[0] in PROTO_NUMBERS])
        for f in (4, 6)
    }
    for w in oracle.workloads.values():
        for own in w.ips:
            others, services = cases[own.version]
            for direction in ("in", "out"):
                for other in others:
                    src, dst = (str(own), other) if direction == "out" else (other, str(own))
                    for proto, port in services:
                        ordered = oracle.matching(w, direction, Probe(src, dst, proto, port))
                        verdict, took = oracle.first_match(w, ordered)
                        without = [m for m in ordered if m[2] != took]
                        if took != "default":
                            decided.add(took)
                            if oracle.first_match(w, without)[0] != verdict:
                                needed.add(took)
                        for i, (_, action, rule) in enumerate(ordered):
                            matched.add(rule)
                            if rule != took:
                                shadowers[rule].add(took)
                            if action == "pass" and _acts(oracle, w, ordered, i):
                                passed.add(rule)
    catalog = load(docs)
    findings: list[Finding] = []
    for policy in catalog.config.policies.values():
        for r in policy.rules:
            if r.id not in matched:
                findings.append(Finding("unmatched", r.id))
            elif r.action == "pass":
                if r.id not in passed:
                    findings.append(Finding("pass-nothing", r.id))
            elif r.id not in decided:
                findings.append(Finding("shadowed", r.id, tuple(sorted(shadowers[r.id]))))
            elif r.id not in needed:
                findings.append(Finding("redundant", r.id))
    for key in catalog.config.groups:
        members, cidrs = oracle.group(key)
        if not cidrs and not any(oracle.workloads[m].ips for m in members if m in oracle.workloads):
            findings.append(Finding("empty-group", key))
    return findings


def _acts(oracle: Oracle, w: OWorkload, ordered: list[Matched], i: int) -> bool:
    """Whether the `pass` rule `ordered[i]` acts: as a `drop`, it would decide."""
    order, _, rule = ordered[i]
    as_drop = [*ordered[:i], (order, "drop", rule), *ordered[i + 1 :]]
    return oracle.first_match(w, as_drop)[1] == rule


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(fleet=fleets())
def test_lint_agrees_with_brute_force(fleet: list[Doc]) -> None:
    found = lint(load(fleet))
    assert found == reference_lint(fleet)
    for f in found:
        event(f.kind)
