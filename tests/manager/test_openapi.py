"""The OpenAPI document: every operation is described, and a schemathesis run against a
live manager (as provider-admin) never gets a 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from hyperwall.manager.app import create_app
from tests.manager.conftest import Live, example_documents, start_server
from tests.manager.support import call
from tests.store.conftest import sqlite_urls

SPEC = create_app("sqlite:///unused.db").openapi()
schema = schemathesis.openapi.from_dict(SPEC)


def test_every_route_is_documented_with_bearer_auth() -> None:
    paths = SPEC["paths"]
    for path in (
        "/v1/apply",
        "/v1/documents",
        "/v1/documents/{kind}/{name}",
        "/v1/diff",
        "/v1/history",
        "/v1/revisions/{number}",
        "/v1/rollback/{number}",
        "/v1/status",
        "/v1/tokens",
        "/v1/tokens/{token_id}",
        "/v1/agent/{host}/desired",
        "/v1/agent/{host}/status",
        "/v1/agent/{host}/inventory",
    ):
        assert path in paths, path
    assert "HTTPBearer" in SPEC["components"]["securitySchemes"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    base = tmp_path_factory.mktemp("fuzz")
    for live in start_server(sqlite_urls(Path(base))(), base / "admin.token"):
        call(live.url, live.admin, "POST", "/v1/apply", {"documents": example_documents()})
        yield live


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case: schemathesis.Case[Any], server: Live) -> None:
    if case.path.endswith("/desired") and case.query:
        case.query["wait"] = 0  # never long-poll in a fuzz run
    response = case.call(base_url=server.url, headers={"Authorization": f"Bearer {server.admin}"})
    assert response.status_code < 500, (case.method, case.path, response.text)
