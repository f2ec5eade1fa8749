"""The assertion gate through a live manager and the CLI: a change, a delete and a
rollback after which an assertion fails are refused (exit 1, the counterexample printed)
and leave the history unchanged (stored revisions and ledger); diff shows what a change
would break; only the assertions a change touches are re-checked."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.manager.conftest import EXAMPLES, Live, example_documents, start_server
from tests.manager.support import assertion
from tests.manager.test_cli import hw

LB_NOT_APP = "acme/hwb-lb-not-app"
WEB_TO_APP = "acme/hwb-web-to-app"


def _named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def shop(opened: bool) -> list[dict[str, Any]]:
    """acme's shop policy; `opened`: its web-to-app rule admits the whole shop, so the
    load balancer may skip the web tier."""
    policy = copy.deepcopy(_named(example_documents(), "Policy", "shop"))
    if opened:
        for rule in policy["spec"]["rules"]:
            if rule["name"] == "web-to-app":
                rule["from"] = [{"group": "shop-all"}]
    return [policy]


def write(path: Path, docs: list[dict[str, Any]]) -> str:
    path.write_text(yaml.safe_dump_all(docs))
    return str(path)


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Live, Path]]:
    """Revisions 1: the examples; 2: the load balancer may reach the app tier; 3: not
    again; 4: the assertions (only web reaches the app tier's API, and it always does)."""
    base = tmp_path_factory.mktemp("hwb-gate")
    server = start_server(f"sqlite:///{base}/hwb-gate.db?poll=0.05", base / "admin.token")
    live = next(server)
    try:
        assert hw(live, "apply", "-f", str(EXAMPLES)).exit_code == 0
        assert hw(live, "apply", "-f", write(base / "open.yaml", shop(True))).exit_code == 0
        assert hw(live, "apply", "-f", write(base / "shut.yaml", shop(False))).exit_code == 0
        rules = write(
            base / "assertions.yaml",
            [
                assertion("hwb-lb-not-app", "lb", "app", "app-api", "deny"),
                assertion("hwb-web-to-app", "web", "app", "app-api", "allow"),
            ],
        )
        r = hw(live, "apply", "-f", rules, "--json")
        assert r.exit_code == 0, r.output
        assert sorted(json.loads(r.stdout)["assertions"]["checked"]) == [LB_NOT_APP, WEB_TO_APP]
        yield live, base
    finally:
        server.close()


def history_of(live: Live) -> tuple[list[int], list[str]]:
    """The stored revisions' numbers and the ledger's hashes."""
    revisions = [e["revision"] for e in json.loads(hw(live, "history", "--json").stdout)]
    hashes = [e["hash"] for e in json.loads(hw(live, "audit", "--json").stdout)]
    return revisions, hashes


def test_a_refused_apply_delete_and_rollback_leave_the_history_unchanged(
    gated: tuple[Live, Path],
) -> None:
    live, base = gated
    before = history_of(live)
    assert before[0] == [4, 3, 2, 1] and len(before[1]) == 4

    r = hw(live, "apply", "-f", write(base / "again.yaml", shop(True)))
    assert r.exit_code == 1
    assert LB_NOT_APP in r.output and "nothing was committed" in r.output
    assert "10.1.0.10 -> 10.1.0.3" in r.output  # the counterexample: lb-1 to an app

    r = hw(live, "delete", "policy", "shop", "--tenant", "acme", "--json")
    assert r.exit_code == 1, r.output
    refused = json.loads(r.stdout)
    assert [a["name"] for a in refused["assertions"]] == [WEB_TO_APP]
    case = refused["assertions"][0]["counterexample"]
    assert case["from"].startswith("10.1.0.2") and case["trace"]["verdict"] != "allow"

    # revision 2 predates the assertion, but a rollback must still satisfy it
    r = hw(live, "rollback", "2", "--json")
    assert r.exit_code == 1, r.output
    assert [a["name"] for a in json.loads(r.stdout)["assertions"]] == [LB_NOT_APP]

    assert history_of(live) == before
    r = hw(live, "audit", "--verify", "--json")
    assert json.loads(r.stdout)["intact"] is True


def test_diff_shows_what_would_break_and_checks_only_what_a_change_touches(
    gated: tuple[Live, Path],
) -> None:
    live, base = gated
    r = hw(live, "diff", "-f", str(base / "open.yaml"))
    assert r.exit_code == 0 and "would break 1 of 2 assertions" in r.output
    assert LB_NOT_APP in r.output

    docs = example_documents()
    web = copy.deepcopy(_named(docs, "Workload", "web-1"))
    web["metadata"]["labels"]["note"] = "relabelled"
    r = hw(live, "diff", "-f", write(base / "web.yaml", [web]), "--json")
    assert json.loads(r.stdout)["assertions"] == {"checked": [WEB_TO_APP], "broken": []}
    lb = copy.deepcopy(_named(docs, "Workload", "lb-1"))
    lb["metadata"]["labels"]["note"] = "relabelled"
    r = hw(live, "diff", "-f", write(base / "lb.yaml", [lb]), "--json")
    assert json.loads(r.stdout)["assertions"] == {"checked": [LB_NOT_APP], "broken": []}
    other = copy.deepcopy(_named(docs, "Workload", "globex-web-1"))
    other["metadata"]["labels"]["note"] = "relabelled"
    r = hw(live, "diff", "-f", write(base / "globex.yaml", [other]), "--json")
    assert json.loads(r.stdout)["assertions"] == {"checked": [], "broken": []}
    r = hw(live, "rollback", "3", "--json")  # the same documents as now, but no assertions
    assert r.exit_code == 0, r.output
