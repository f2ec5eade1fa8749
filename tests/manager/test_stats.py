"""`GET /v1/stats` on a live manager (SQLite store, the examples applied): two hosts' reports
summed per rule of the current policy, a tenant-admin limited to its tenant, an agent to its
own host, `--unused` and the `hyperwall stats` command; and `manager.stats.rows` against a
plain sum."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from hyperwall.cli.app import app
from hyperwall.manager.stats import HostHits, rows
from tests.manager.conftest import Live, example_documents, start_server
from tests.manager.support import call
from tests.store.conftest import sqlite_urls

runner = CliRunner()


def hw(live: Live, *args: str) -> Result:
    env = {"HYPERWALL_SERVER": live.url, "HYPERWALL_TOKEN": live.admin}
    return runner.invoke(app, list(args), env=env)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Live, dict[str, str]]]:
    base = tmp_path_factory.mktemp("stats")
    for live in start_server(sqlite_urls(base)(), base / "admin.token"):
        r = call(live.url, live.admin, "POST", "/v1/apply", {"documents": example_documents()})
        assert r.status_code == 200
        tokens = {"provider": live.admin}
        for name, body in (
            ("acme", {"role": "tenant-admin", "tenant": "acme"}),
            ("hv1", {"role": "agent", "host": "hv1"}),
            ("hv2", {"role": "agent", "host": "hv2"}),
        ):
            tokens[name] = call(live.url, live.admin, "POST", "/v1/tokens", body).json()["token"]
        yield live, tokens


NOW = time.time()
HV1 = {
    "acme/shop/web-in": {"packets": 3, "bytes": 180, "lastHit": NOW - 10},
    "default@acme": {"packets": 1, "bytes": 60, "lastHit": NOW - 5 * 86400},
    "infra-services/dns": {"packets": 7, "bytes": 420, "lastHit": NOW - 20},
}
HV2 = {
    "acme/shop/web-in": {"packets": 2, "bytes": 120, "lastHit": NOW - 5},
    "globex/app/web": {"packets": 4, "bytes": 240, "lastHit": NOW - 30},
}


def _put(live: Live, token: str, host: str, rules: dict[str, Any]) -> int:
    body = {"read": NOW, "rules": rules}
    return call(live.url, token, "PUT", f"/v1/agent/{host}/hits", body).status_code


def test_two_hosts_are_summed_per_rule(fleet: tuple[Live, dict[str, str]]) -> None:
    live, tokens = fleet
    assert _put(live, tokens["hv1"], "hv1", HV1) == 204
    assert _put(live, tokens["hv2"], "hv2", HV2) == 204
    assert _put(live, tokens["hv1"], "hv2", HV2) == 403  # an agent reports for its host only
    body = call(live.url, tokens["provider"], "GET", "/v1/stats").json()
    assert body["hosts"] == {"hv1": NOW, "hv2": NOW}
    by_rule = {(r["rule"], r["tenant"]): r for r in body["rules"]}
    web_in = by_rule["acme/shop/web-in", "acme"]
    assert (web_in["packets"], web_in["bytes"], web_in["hosts"]) == (5, 300, 2)
    assert web_in["lastHit"] == NOW - 5 and web_in["policy"] == "acme/shop"
    assert by_rule["default", "acme"]["packets"] == 1
    # every rule of the current policy has a row; one nobody hit has zeros
    never = [r for r in body["rules"] if r["lastHit"] is None]
    assert never and all(r["packets"] == 0 and r["hosts"] == 0 for r in never)
    # a rule reported but not in the policy is left out
    assert ("globex/app/web", "globex") not in by_rule


def test_a_tenant_admin_sees_its_own_rules_only(fleet: tuple[Live, dict[str, str]]) -> None:
    live, tokens = fleet
    body = call(live.url, tokens["acme"], "GET", "/v1/stats").json()
    assert body["rules"] and {r["tenant"] for r in body["rules"]} == {"acme"}
    mine = call(live.url, tokens["acme"], "GET", "/v1/stats", tenant="globex").json()
    assert mine["rules"] == []
    assert call(live.url, tokens["hv1"], "GET", "/v1/stats").status_code == 403


def test_filters_and_the_command(fleet: tuple[Live, dict[str, str]]) -> None:
    live, tokens = fleet
    _put(live, tokens["hv1"], "hv1", HV1)
    _put(live, tokens["hv2"], "hv2", HV2)
    shop = call(live.url, tokens["provider"], "GET", "/v1/stats", tenant="acme", policy="shop")
    assert {r["policy"] for r in shop.json()["rules"]} == {"acme/shop"}
    result = hw(live, "stats", "--json", "--tenant", "acme", "--unused", "1")
    assert result.exit_code == 0, result.output
    unused = json.loads(result.stdout)["rules"]
    names = {r["rule"] for r in unused}
    assert "acme/shop/web-in" not in names  # hit 5 s ago
    assert "default" in names  # last hit 5 days ago
    assert all(r["tenant"] == "acme" for r in unused)
    table = hw(live, "stats")
    assert table.exit_code == 0 and "acme/shop/web-in" in table.stdout


reports = st.dictionaries(
    st.sampled_from(["h1", "h2", "h3"]),
    st.dictionaries(
        st.sampled_from(["t/p/a", "t/p/b", "p/c", "default@t"]),
        st.tuples(st.integers(0, 10**12), st.integers(0, 10**15), st.none() | st.floats(0, 1e9)),
    ),
)


@given(reports)
def test_rows_are_plain_sums(board: dict[str, dict[str, tuple[int, int, float | None]]]) -> None:
    found = rows({h: HostHits(0.0, r) for h, r in board.items()}, None, visible=lambda _: True)
    for row in found:
        key = row.rule if row.rule != "default" else f"default@{row.tenant}"
        entries = [r[key] for r in board.values() if key in r]
        assert row.packets == sum(e[0] for e in entries)
        assert row.bytes == sum(e[1] for e in entries)
        lasts = [e[2] for e in entries if e[2] is not None]
        assert row.last_hit == (max(lasts) if lasts else None)
        assert row.hosts == sum(1 for e in entries if e[0])
