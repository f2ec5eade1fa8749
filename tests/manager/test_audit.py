"""`hyperwall audit` through a live manager: records for each role, tenant filtering, and
`--verify` naming the first record altered directly in the SQLite file (exit 1)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.manager.conftest import EXAMPLES, Live, start_server
from tests.manager.support import group
from tests.manager.test_cli import hw


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Live, Path]]:
    """A manager on a SQLite file with three revisions: the examples (provider-admin),
    a group of acme (acme's tenant-admin), a group of globex and one of acme together."""
    base = tmp_path_factory.mktemp("hwb-audit")
    path = base / "hwb-audit.db"
    server = start_server(f"sqlite:///{path}?poll=0.05", base / "admin.token")
    live = next(server)
    try:
        assert hw(live, "apply", "-f", str(EXAMPLES), "-m", "examples").exit_code == 0
        yield live, path
    finally:
        server.close()


def _token(live: Live, role: str, tenant: str | None = None, host: str | None = None) -> str:
    with live.client() as client:
        return client.create_token(role, tenant=tenant, host=host).token


def test_records_per_role_and_verify_then_a_direct_edit(audited: tuple[Live, Path]) -> None:
    live, path = audited
    acme = _token(live, "tenant-admin", "acme")
    auditor = _token(live, "auditor")
    with live.client(acme) as client:
        client.apply([group("hwb-acme-only")], "acme's own")
    with live.client() as client:
        client.apply([group("hwb-both"), group("hwb-other", tenant="globex")], "both tenants")

    r = hw(live, "audit", "--json", token=auditor)
    assert r.exit_code == 0, r.output
    everything = json.loads(r.stdout)
    assert [e["revision"] for e in everything] == [3, 2, 1]
    assert everything[1]["actor"]["role"] == "tenant-admin"
    assert everything[1]["actor"]["scope"] == "acme"
    assert everything[1]["message"] == "acme's own"
    assert everything[0]["prev"] == everything[1]["hash"]
    assert everything[2]["message"] == "examples" and everything[2]["hiddenChanges"] == 0
    assert {c["action"] for c in everything[2]["changes"]} == {"add"}

    r = hw(live, "audit", "--json", token=acme)
    mine = json.loads(r.stdout)
    assert [e["revision"] for e in mine] == [3, 2, 1]  # examples touched acme and provider
    assert mine[0]["hiddenChanges"] == 1 and "hwb-other" not in r.stdout
    assert [c["name"] for c in mine[0]["changes"]] == ["hwb-both"]
    assert mine[0]["message"] != "both tenants"
    globex = _token(live, "tenant-admin", "globex")
    seen = [e["revision"] for e in json.loads(hw(live, "audit", "--json", token=globex).stdout)]
    assert seen == [3, 1]  # not acme's own revision

    r = hw(live, "audit")
    assert r.exit_code == 0 and "acme's own" in r.output
    assert hw(live, "audit", "--json", token=_token(live, "agent", host="hv1")).exit_code == 3

    r = hw(live, "audit", "--verify", "--json", token=auditor)
    assert r.exit_code == 0 and json.loads(r.stdout)["intact"] is True
    assert json.loads(r.stdout)["headHash"] == everything[0]["hash"]

    with sqlite3.connect(path) as conn:  # someone rewrites who made revision 2
        conn.execute("UPDATE revisions SET author = 'provider-admin:x' WHERE number = 2")
    r = hw(live, "audit", "--verify", token=auditor)
    assert r.exit_code == 1
    assert "first altered record 2" in r.output
    r = hw(live, "audit", "--verify", "--json", token=acme)
    assert r.exit_code == 1 and json.loads(r.stdout)["firstAltered"] == 2
