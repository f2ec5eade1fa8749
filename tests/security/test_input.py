"""Findings 4, 6 and 8 of issue 12: a lone surrogate anywhere is a 422 naming the field
(never a 500), nothing is committed; token tenants and hosts are names, the tenant must
exist; `sctp/5` is a port, and docs/policy.md agrees with the validator."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from hyperwall.policy.ports import PortSpecError, parse_port_spec
from tests.manager.support import group
from tests.security.conftest import Fleet, workload

LONE = "\ud800"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "policy.md"


def _labelled(value: str) -> dict[str, Any]:
    return workload("surrogate", "acme", "10.77.200.1", "52:54:00:77:01:01", role=value)


CASES: list[tuple[str, str, str, Any, tuple[int, str]]] = [
    ("acme", "POST", "/v1/apply", {"documents": [_labelled(LONE)]}, (1, "metadata.labels.role")),
    (
        "acme",
        "POST",
        "/v1/apply",
        {"documents": [_labelled("x")], "dryRun": True, "message": LONE},
        (0, "message"),
    ),
    (
        "auditor",
        "POST",
        "/v1/diff",
        {"documents": [group("g", "acme", selector=f"a == '{LONE}'")]},
        (1, "spec.selector"),
    ),
    (
        "agent",
        "PUT",
        "/v1/agent/hv1/status",
        {"revision": 1, "converged": False, "error": LONE},
        (0, "error"),
    ),
    (
        "agent",
        "PUT",
        "/v1/agent/hv1/inventory",
        {"workloads": [{"n": LONE}]},
        (0, "workloads[0].n"),
    ),
    ("provider", "POST", "/v1/tokens", {"role": "tenant-admin", "tenant": LONE}, (0, "tenant")),
]


@pytest.mark.parametrize(("who", "method", "path", "body", "where"), CASES)
def test_a_lone_surrogate_is_a_422_naming_the_field(
    fleet: Fleet, who: str, method: str, path: str, body: Any, where: tuple[int, str]
) -> None:
    revision = fleet.revision()
    r = fleet.call(who, method, path, body)
    assert r.status_code == 422, r.text
    [error] = r.json()["errors"]
    assert (error["document"], error["path"]) == where
    assert "surrogate" in error["message"]
    assert fleet.revision() == revision


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "tenant-admin", "tenant": "../x"}, "tenant"),
        ({"role": "tenant-admin", "tenant": "nosuchtenant"}, "tenant"),
        ({"role": "agent", "host": "hv1\n"}, "host"),
        ({"role": "agent", "host": "HV1"}, "host"),
        ({"role": "root"}, "role"),
    ],
)
def test_token_tenant_and_host_are_validated(fleet: Fleet, body: Any, field: str) -> None:
    r = fleet.call("provider", "POST", "/v1/tokens", body)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["path"] == field


def test_a_token_of_an_existing_tenant_is_created(fleet: Fleet) -> None:
    r = fleet.call("provider", "POST", "/v1/tokens", {"role": "tenant-admin", "tenant": "globex"})
    assert r.status_code == 201


def test_sctp_ports_are_valid_and_the_docs_bad_ports_are_refused() -> None:
    assert str(parse_port_spec("sctp/5")) == "sctp/5"
    row = next(line for line in DOCS.read_text().splitlines() if line.startswith("| bad port"))
    examples = re.findall(r"`([^`]+)`", row)
    assert examples and "sctp/5" not in examples
    for spec in examples:
        with pytest.raises(PortSpecError):
            parse_port_spec(spec)
