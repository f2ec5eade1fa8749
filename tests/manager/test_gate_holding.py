"""The gate's memory of what holds (`gate.Holding`): an assertion known to hold is
re-checked after a change of Workloads only on the changed addresses' cases, with the same
verdicts as a whole check; what a change does not touch is carried to the next revision."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from hyperwall.manager.gate import Holding, check_change
from hyperwall.policy.catalog import build_catalog
from hyperwall.policy.errors import Source
from hyperwall.policy.model import Catalog
from tests.manager.conftest import example_documents
from tests.manager.support import assertion

LB_NOT_APP = "acme/hwb-lb-not-app"
WEB_TO_APP = "acme/hwb-web-to-app"


def _catalog(docs: list[dict[str, Any]]) -> Catalog:
    return build_catalog([(d, Source("test", i + 1)) for i, d in enumerate(docs)])


def _fleet() -> Catalog:
    return _catalog(
        [
            *example_documents(),
            assertion("hwb-lb-not-app", "lb", "app", "app-api", "deny"),
            assertion("hwb-web-to-app", "web", "app", "app-api", "allow"),
        ]
    )


def _relabel(catalog: Catalog, key: str, **labels: str) -> Catalog:
    w = catalog.workloads[key]
    moved = replace(w, labels={**w.labels, **labels})
    return Catalog(catalog.config, {**catalog.workloads, key: moved})


def test_what_held_is_rechecked_on_the_changed_cases_and_a_break_is_refused() -> None:
    fleet = _fleet()
    first = check_change(None, fleet)
    assert set(first.holding) == {LB_NOT_APP, WEB_TO_APP} and not first.broken
    # app-1 leaves prod: the shop policy (applied to prod and stage) no longer admits the
    # web tier at its ingress, so "web reaches app" fails, at app-1's address
    dev = _relabel(fleet, "acme/app-1", env="dev")
    quick = check_change(fleet, dev, None, first.holding)
    whole = check_change(fleet, dev)
    assert [r.name for r in quick.broken] == [r.name for r in whole.broken] == [WEB_TO_APP]
    case = quick.broken[0].counterexample
    assert case is not None and case.destination in fleet.workloads["acme/app-1"].ips()
    assert case.trace.verdict != "allow"
    assert WEB_TO_APP not in quick.holding and LB_NOT_APP in quick.holding
    # a relabel that breaks nothing keeps both known
    noted = _relabel(fleet, "acme/app-1", note="x")
    kept = check_change(fleet, noted, None, first.holding)
    assert not kept.broken and set(kept.holding) == {LB_NOT_APP, WEB_TO_APP}


def test_holding_is_carried_past_changes_that_do_not_touch_it() -> None:
    fleet = _fleet()
    known = Holding(4, check_change(None, fleet).holding)
    other = _relabel(fleet, "globex/globex-web-1", note="x")  # another tenant's workload
    assert set(known.carried(5, fleet, other).assertions) == {LB_NOT_APP, WEB_TO_APP}
    moved = _relabel(fleet, "acme/app-1", note="x")  # selected by both assertions
    assert known.carried(5, fleet, moved).assertions == {}
    assert known.carried(6, fleet, other) == Holding(6)  # not from the revision before
    docs = copy.deepcopy(example_documents())
    policy = next(d for d in docs if d["kind"] == "Policy")
    policy["spec"]["rules"] = policy["spec"]["rules"][:1]
    edited = _catalog([*docs, *(_fleet_assertions())])
    assert known.carried(5, fleet, edited).assertions == {}  # a policy touches them all
    assert known.at(4) == known.assertions and known.at(5) is None


def _fleet_assertions() -> list[dict[str, Any]]:
    return [
        assertion("hwb-lb-not-app", "lb", "app", "app-api", "deny"),
        assertion("hwb-web-to-app", "web", "app", "app-api", "allow"),
    ]
