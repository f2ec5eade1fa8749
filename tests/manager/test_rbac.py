"""Every role against every endpoint family, table-driven, on one live manager."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.manager.conftest import Live, example_documents, start_server
from tests.manager.support import call, group
from tests.store.conftest import sqlite_urls

ROLES = ("none", "bad", "provider", "tenant", "auditor", "agent")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Live, dict[str, Any]]]:
    base = tmp_path_factory.mktemp("rbac")
    for live in start_server(sqlite_urls(base)(), base / "admin.token"):
        r = call(live.url, live.admin, "POST", "/v1/apply", {"documents": example_documents()})
        assert r.status_code == 200
        tokens: dict[str, Any] = {"none": None, "bad": "hw_not-a-token", "provider": live.admin}
        for name, body in (
            ("tenant", {"role": "tenant-admin", "tenant": "acme"}),
            ("auditor", {"role": "auditor"}),
            ("agent", {"role": "agent", "host": "hv1"}),
        ):
            tokens[name] = call(live.url, live.admin, "POST", "/v1/tokens", body).json()["token"]
        yield live, tokens


PROVIDER_DOC = group("extra-provider", None)
GLOBEX = group("extra-globex", "globex")
STATUS = {"revision": 1, "programHash": None, "converged": True, "error": None, "endpoints": 0}

# (family, method, path, body, params, expected by role: none bad provider tenant auditor agent)
CASES: list[tuple[str, str, str, Any, dict[str, Any], tuple[int, ...]]] = [
    ("list", "GET", "/v1/documents", None, {}, (401, 401, 200, 200, 200, 403)),
    ("get", "GET", "/v1/documents/Group/web", None, {"tenant": "acme"},
     (401, 401, 200, 200, 200, 403)),
    ("get-other-tenant", "GET", "/v1/documents/Group/web", None, {"tenant": "globex"},
     (401, 401, 200, 404, 200, 403)),
    ("apply-own-tenant", "POST", "/v1/apply", {"documents": [group("rbac", "acme")]}, {},
     (401, 401, 200, 200, 403, 403)),
    ("apply-provider", "POST", "/v1/apply", {"documents": [PROVIDER_DOC]}, {},
     (401, 401, 200, 403, 403, 403)),
    ("apply-other-tenant", "POST", "/v1/apply", {"documents": [GLOBEX]}, {},
     (401, 401, 200, 403, 403, 403)),
    ("diff", "POST", "/v1/diff", {"documents": [group("rbac2", "acme")]}, {},
     (401, 401, 200, 200, 200, 403)),
    ("delete-own-tenant", "DELETE", "/v1/documents/Group/absent", None, {"tenant": "acme"},
     (401, 401, 404, 404, 403, 403)),
    ("delete-provider", "DELETE", "/v1/documents/Group/absent", None, {},
     (401, 401, 404, 403, 403, 403)),
    ("history", "GET", "/v1/history", None, {}, (401, 401, 200, 200, 200, 403)),
    ("revision", "GET", "/v1/revisions/1", None, {}, (401, 401, 200, 200, 200, 403)),
    ("rollback", "POST", "/v1/rollback/1", None, {}, (401, 401, 200, 403, 403, 403)),
    ("status", "GET", "/v1/status", None, {}, (401, 401, 200, 200, 200, 403)),
    ("tokens", "POST", "/v1/tokens", {"role": "auditor"}, {}, (401, 401, 201, 403, 403, 403)),
    ("tokens-list", "GET", "/v1/tokens", None, {}, (401, 401, 200, 403, 403, 403)),
    ("tokens-revoke", "DELETE", "/v1/tokens/absent", None, {}, (401, 401, 404, 403, 403, 403)),
    ("agent-desired-own", "GET", "/v1/agent/hv1/desired", None, {"after": 0},
     (401, 401, 200, 403, 403, 200)),
    ("agent-desired-other", "GET", "/v1/agent/hv2/desired", None, {"after": 0},
     (401, 401, 200, 403, 403, 403)),
    ("agent-status-own", "PUT", "/v1/agent/hv1/status", STATUS, {},
     (401, 401, 204, 403, 403, 204)),
    ("agent-status-other", "PUT", "/v1/agent/hv2/status", STATUS, {},
     (401, 401, 204, 403, 403, 403)),
    ("agent-inventory-own", "PUT", "/v1/agent/hv1/inventory", {"workloads": []}, {},
     (401, 401, 204, 403, 403, 204)),
]  # fmt: skip


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_role_against_endpoint(
    fleet: tuple[Live, dict[str, Any]], case: tuple[Any, ...], role: str
) -> None:
    live, tokens = fleet
    _, method, path, body, params, expected = case
    r = call(live.url, tokens[role], method, path, body, **params)
    assert r.status_code == expected[ROLES.index(role)], r.text
    if r.status_code in (401, 403):
        assert isinstance(r.json()["error"], str) and r.json()["error"]


def test_tenant_admin_sees_only_its_tenant_and_provider(
    fleet: tuple[Live, dict[str, Any]],
) -> None:
    live, tokens = fleet
    docs = call(live.url, tokens["tenant"], "GET", "/v1/documents").json()["documents"]
    assert {d["metadata"].get("tenant") for d in docs} == {None, "acme"}


def test_refusals_are_logged(
    fleet: tuple[Live, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    live, tokens = fleet
    with caplog.at_level("WARNING", logger="hyperwall.manager.auth"):
        call(live.url, tokens["auditor"], "POST", "/v1/rollback/1")
    assert any("refused POST /v1/rollback/1" in r.getMessage() for r in caplog.records)
