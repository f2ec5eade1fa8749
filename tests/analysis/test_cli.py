"""`hyperwall verify`, `lint` and `reach` in-process (typer's CliRunner) on `examples/`
plus planted documents; `reach --server` against a real manager (SQLite store, module
scoped) for the revisions diff and the tenant scoping."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from hyperwall.cli.app import app
from tests.analysis.test_assertions import assertion as make_assertion
from tests.manager.conftest import Live, example_documents, start_server
from tests.manager.support import call
from tests.store.conftest import sqlite_urls

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
runner = CliRunner()


def run(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def write(path: Path, *docs: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump_all(docs))
    return path


def assertion(
    name: str, expect: str, tenant: str | None = "acme", src: Any = None, **spec: Any
) -> dict[str, Any]:
    """An Assertion document expecting `expect`; `src` is its `from`."""
    return make_assertion(name, tenant, src, expect=expect, **spec)


PCI = assertion(
    "pci-only-from-app",
    "allow",
    src=[{"group": "app"}],
    to=[{"group": "pci"}],
    services=["postgres"],
)
WEB_TO_PCI = assertion("web-not-pci", "deny", src=[{"group": "web"}], to=[{"group": "pci"}])
OFFICE = assertion(
    "office-to-db",
    "deny",
    src=[{"cidr": "198.51.100.0/24"}],
    to=[{"group": "shop-all"}],
    services=["tcp/443"],
)


def test_verify_exit_0_when_every_assertion_holds(tmp_path: Path) -> None:
    result = run(
        "verify", "-f", EXAMPLES, "-f", write(tmp_path / "a.yaml", PCI, WEB_TO_PCI), "--json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "assertions": [
            {"name": "acme/pci-only-from-app", "holds": True, "counterexample": None},
            {"name": "acme/web-not-pci", "holds": True, "counterexample": None},
        ]
    }
    text = run("verify", "-f", EXAMPLES, "-f", tmp_path / "a.yaml")
    assert "holds  acme/pci-only-from-app (allow; by acme/shop/app-to-db)" in text.stdout


def test_verify_exit_1_with_a_counterexample_that_trace_replays(tmp_path: Path) -> None:
    extra = write(tmp_path / "a.yaml", PCI, OFFICE)
    result = run("verify", "-f", EXAMPLES, "-f", extra, "--json")
    assert result.exit_code == 1, result.output
    failed = json.loads(result.stdout)["assertions"][1]
    cx = failed["counterexample"]
    assert failed["name"] == "acme/office-to-db" and not failed["holds"]
    assert (cx["service"], cx["trace"]["verdict"]) == ("tcp/443", "allow")
    replay = run(
        "trace",
        "-f",
        EXAMPLES,
        "--from",
        cx["from"],
        "--to",
        cx["to"],
        "--service",
        cx["service"],
        "--json",
    )
    assert replay.exit_code == 0 and json.loads(replay.stdout) == cx["trace"]
    text = run("verify", "-f", EXAMPLES, "-f", extra)
    assert "FAILS  acme/office-to-db (expect deny)" in text.stdout
    assert "replay: hyperwall trace" in text.stdout


def test_verify_exit_2_names_file_document_and_field(tmp_path: Path) -> None:
    bad = assertion("cross", "allow", src=[{"group": "globex/web"}], expect_typo=1)
    bad["spec"].pop("expect_typo")
    bad["spec"]["expect"] = "maybe"
    path = write(tmp_path / "bad.yaml", PCI, bad)
    result = run("verify", "-f", EXAMPLES, "-f", path)
    assert result.exit_code == 2
    assert f"{path} document 2: spec.expect: bad value 'maybe'" in result.stderr
    cross = assertion("cross", "allow", src=[{"group": "globex/web"}])
    result = run("verify", "-f", EXAMPLES, "-f", write(tmp_path / "cross.yaml", cross))
    assert result.exit_code == 2
    assert (
        "document 1: spec.from[0].group: cross-tenant reference to Group 'globex/web'"
        in result.stderr
    )


def test_lint_exit_1_with_findings_and_0_without(tmp_path: Path) -> None:
    clean = run("lint", "-f", EXAMPLES, "--json")
    assert clean.exit_code == 0 and json.loads(clean.stdout) == {"findings": []}
    planted = {
        "apiVersion": "hyperwall.io/v1",
        "kind": "Policy",
        "metadata": {"name": "early", "tenant": "acme"},
        "spec": {
            "tier": "emergency",
            "rules": [
                {
                    "name": "no-postgres",
                    "action": "drop",
                    "to": [{"group": "db"}],
                    "services": ["tcp/5432"],
                },
            ],
        },
    }
    result = run("lint", "-f", EXAMPLES, "-f", write(tmp_path / "p.yaml", planted), "--json")
    assert result.exit_code == 1
    assert {
        "kind": "shadowed",
        "subject": "acme/shop/app-to-db",
        "shadowedBy": ["acme/early/no-postgres"],
    } in json.loads(result.stdout)["findings"]


def test_reach_from_files() -> None:
    result = run(
        "reach", "-f", EXAMPLES, "--from", "app", "--to", "pci", "--tenant", "acme", "--json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "rows": ["acme/app"],
        "columns": ["acme/pci"],
        "reach": [
            {
                "from": "acme/app",
                "to": "acme/pci",
                "services": ["tcp/5432"],
                "rules": ["acme/shop/app-to-db"],
            }
        ],
    }
    assert run("reach", "-f", EXAMPLES, "--from", "nope").exit_code == 2
    assert run("reach", "-f", EXAMPLES, "--between", "1", "2").exit_code == 2


# -- through the manager -----------------------------------------------------------------


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Live, dict[str, str]]]:
    base = tmp_path_factory.mktemp("hwa-reach")
    for live in start_server(sqlite_urls(base)(), base / "admin.token"):
        first = call(live.url, live.admin, "POST", "/v1/apply", {"documents": example_documents()})
        assert first.status_code == 200, first.text
        opened = {
            "apiVersion": "hyperwall.io/v1",
            "kind": "Policy",
            "metadata": {"name": "more", "tenant": "acme"},
            "spec": {
                "rules": [
                    {
                        "name": "lb-to-app",
                        "action": "allow",
                        "from": [{"group": "lb"}],
                        "to": [{"group": "app"}],
                        "services": ["tcp/8000-8080"],
                    }
                ]
            },
        }
        second = call(live.url, live.admin, "POST", "/v1/apply", {"documents": [opened]})
        assert second.status_code == 200, second.text
        globex = call(
            live.url, live.admin, "POST", "/v1/tokens", {"role": "tenant-admin", "tenant": "globex"}
        )
        tokens = {"provider": live.admin, "globex": globex.json()["token"]}
        yield live, tokens


def remote(live: Live, token: str, *args: str) -> Result:
    return runner.invoke(
        app, ["reach", "--server", live.url, *args], env={"HYPERWALL_TOKEN": token}
    )


def test_reach_between_two_revisions_shows_what_the_change_opened(
    manager: tuple[Live, dict[str, str]],
) -> None:
    live, tokens = manager
    result = remote(live, tokens["provider"], "--tenant", "acme", "--between", "1", "2", "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["between"] == [1, 2]
    assert {
        "from": "acme/lb",
        "to": "acme/app",
        "opened": ["tcp/8000-8080"],
        "closed": [],
    } in answer["changes"]
    assert all(not c["closed"] for c in answer["changes"])
    back = remote(live, tokens["provider"], "--tenant", "acme", "--between", "2", "1", "--json")
    assert {
        "from": "acme/lb",
        "to": "acme/app",
        "opened": [],
        "closed": ["tcp/8000-8080"],
    } in json.loads(back.stdout)["changes"]


def test_reach_through_the_manager_is_tenant_scoped(manager: tuple[Live, dict[str, str]]) -> None:
    live, tokens = manager
    own = remote(live, tokens["globex"], "--json")
    assert own.exit_code == 0, own.output
    assert all(r.startswith("globex/") for r in json.loads(own.stdout)["rows"])
    assert remote(live, tokens["globex"], "--tenant", "acme").exit_code == 3
    assert remote(live, tokens["globex"], "--from", "acme/web").exit_code == 3
    now = remote(
        live, tokens["provider"], "--from", "lb", "--to", "app", "--tenant", "acme", "--json"
    )
    assert json.loads(now.stdout)["revision"] == 2
    assert json.loads(now.stdout)["reach"][0]["services"] == ["tcp/8000-8080"]
