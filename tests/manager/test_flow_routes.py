"""The flow endpoints on a live manager: agents ship (validated, once), people read under
RBAC (a tenant sees only its own workloads' records, auditor and provider-admin all)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from hyperwall.flows.filter import us_time
from hyperwall.io.files import read_documents
from tests.manager.conftest import EXAMPLES, Live, start_server
from tests.manager.support import call
from tests.store.conftest import sqlite_urls

T0 = 1_796_000_000_000_000


def rec(
    n: int, workload: str | None, rule: str = "acme/p/r", action: str = "drop"
) -> dict[str, Any]:
    r: dict[str, Any] = {"time": us_time(T0 + n), "host": "hv1", "rule": rule, "action": action}
    if workload:
        r["workload"] = workload
    return r


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Live, dict[str, str]]]:
    base = tmp_path_factory.mktemp("hwd-flows")
    docs, issues = read_documents([EXAMPLES / "tenants.yaml"])
    assert not issues
    for live in start_server(sqlite_urls(base)(), base / "admin.token"):
        assert call(live.url, live.admin, "POST", "/v1/apply", {"documents": [d for d, _ in docs]})
        tokens = {"provider": live.admin}
        for name, body in (
            ("acme", {"role": "tenant-admin", "tenant": "acme"}),
            ("globex", {"role": "tenant-admin", "tenant": "globex"}),
            ("auditor", {"role": "auditor"}),
            ("hv1", {"role": "agent", "host": "hv1"}),
            ("hv2", {"role": "agent", "host": "hv2"}),
        ):
            tokens[name] = call(live.url, live.admin, "POST", "/v1/tokens", body).json()["token"]
        batch = {
            "file": "1-a",
            "offset": 0,
            "end": 500,
            "records": [
                rec(1, "acme/db-1"),
                rec(2, "globex/db-1", "globex/q/r"),
                rec(3, "dns-1", "default"),
                rec(4, "acme/web-1", "acme/p/s", "allow"),
                rec(5, None, "unknown-interface"),
            ],
        }
        r = call(live.url, tokens["hv1"], "POST", "/v1/agent/hv1/flows", batch)
        assert r.status_code == 200, r.text
        assert r.json() == {"stored": 5, "file": "1-a", "offset": 500}
        yield live, tokens


def flows(fleet: tuple[Live, dict[str, str]], who: str, **params: Any) -> Any:
    live, tokens = fleet
    return call(live.url, tokens[who], "GET", "/v1/flows", **params)


def workloads(answer: Any) -> list[str | None]:
    return [r.get("workload") for r in answer.json()["records"]]


def test_a_tenant_sees_only_its_own_workloads(fleet: tuple[Live, dict[str, str]]) -> None:
    assert workloads(flows(fleet, "acme")) == ["acme/db-1", "acme/web-1"]
    assert workloads(flows(fleet, "globex")) == ["globex/db-1"]
    assert workloads(flows(fleet, "globex", workload="db-1")) == ["globex/db-1"]
    assert workloads(flows(fleet, "acme", rule="globex")) == []
    refused = flows(fleet, "acme", tenant="globex")
    assert refused.status_code == 403 and "globex" in refused.json()["error"]
    assert flows(fleet, "acme", tenant="-").status_code == 403


def test_auditor_and_provider_see_all(fleet: tuple[Live, dict[str, str]]) -> None:
    everything = ["acme/db-1", "globex/db-1", "dns-1", "acme/web-1", None]
    assert workloads(flows(fleet, "auditor")) == everything
    assert workloads(flows(fleet, "provider")) == everything
    assert workloads(flows(fleet, "auditor", tenant="-")) == ["dns-1", None]
    assert workloads(flows(fleet, "auditor", action="allow")) == ["acme/web-1"]
    assert workloads(flows(fleet, "auditor", rule="acme/p", limit=1)) == ["acme/web-1"]


def test_agents_read_nothing_and_ship_only_for_their_host(
    fleet: tuple[Live, dict[str, str]],
) -> None:
    live, tokens = fleet
    assert flows(fleet, "hv1").status_code == 403
    body = {"file": "x", "offset": 0, "end": 1, "records": []}
    assert call(live.url, tokens["hv2"], "POST", "/v1/agent/hv1/flows", body).status_code == 403
    assert call(live.url, tokens["acme"], "POST", "/v1/agent/hv1/flows", body).status_code == 403
    assert call(live.url, None, "GET", "/v1/flows").status_code == 401


def test_bad_batches_are_refused_whole(fleet: tuple[Live, dict[str, str]]) -> None:
    live, tokens = fleet
    good = rec(9, "acme/db-1")
    cases = [
        ([good, {**good, "time": "noon"}], "records[1].time"),
        ([{**good, "host": "hv2"}], "records[0].host"),
        ([good, {**good, "rule": 5}], "records[1].rule"),
    ]
    for records, path in cases:
        body = {"file": "2-b", "offset": 0, "end": 10, "records": records}
        r = call(live.url, tokens["hv1"], "POST", "/v1/agent/hv1/flows", body)
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["path"] == path
    r = call(
        live.url,
        tokens["hv1"],
        "POST",
        "/v1/agent/hv1/flows",
        {"file": "2-b", "offset": 5, "end": 1, "records": []},
    )
    assert r.status_code == 422 and r.json()["errors"][0]["path"] == "end"
    assert len(flows(fleet, "auditor").json()["records"]) == 5  # nothing half-stored


def test_since_and_follow_cursor(fleet: tuple[Live, dict[str, str]]) -> None:
    page = flows(fleet, "auditor", since=us_time(T0 + 3))
    assert [r["time"] for r in page.json()["records"]] == [us_time(T0 + n) for n in (3, 4, 5)]
    assert flows(fleet, "auditor", since="10 parsecs").json()["errors"][0]["path"] == "since"
    cursor = page.json()["cursor"]
    again = flows(fleet, "auditor", after=cursor).json()
    assert again == {"records": [], "cursor": cursor}
