"""The report's content over the examples: assertion results with evidence, and a
reachability matrix whose every cell agrees with `trace` (a reaching cell's example
replays as allowed; a non-reaching pair is denied between all their workloads' addresses
on the services the fleet uses)."""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path

import pytest

from hyperwall.analysis.trace import trace
from hyperwall.io.files import read_documents
from hyperwall.manager.compliance import compliance, in_scope
from hyperwall.policy.catalog import build_catalog
from hyperwall.policy.errors import Source
from hyperwall.policy.model import Catalog
from tests.manager.support import assertion

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


EMPTY = {
    "apiVersion": "hyperwall.io/v1",
    "kind": "Group",
    "metadata": {"name": "hwb-nobody", "tenant": "acme"},
    "spec": {"selector": 'role == "nobody"'},
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    docs, issues = read_documents([EXAMPLES])
    assert not issues
    extra = [
        assertion("lb-not-app", "lb", "app", "app-api", "deny", "lb-not-app <b>"),
        assertion("web-to-app", "web", "app", "app-api", "allow", "web-to-app <b>"),
        assertion(
            "office-to-app", "office", "app", "app-api", "allow", "office-to-app <b>"
        ),  # fails
        EMPTY,
    ]
    return build_catalog([*docs, *[(d, Source("hwb", i + 1)) for i, d in enumerate(extra)]])


def test_assertions_with_evidence_counterexamples_and_documents(catalog: Catalog) -> None:
    found = compliance(catalog, "acme")
    by_name = {a["name"]: a for a in found.assertions}
    assert set(by_name) == {"acme/lb-not-app", "acme/web-to-app", "acme/office-to-app"}
    assert by_name["acme/web-to-app"]["holds"]
    assert by_name["acme/web-to-app"]["evidence"] == ["acme/shop/web-to-app"]
    failing = by_name["acme/office-to-app"]
    assert not failing["holds"] and failing["counterexample"]["trace"]["verdict"] == "drop"
    assert failing["from"] == ["group acme/office"] and failing["services"] == ["tcp/8000-8080"]
    assert ("Policy", "acme", "shop") in found.documents
    assert ("Tenant", None, "acme") in found.documents  # the default decided some case
    assert ("Tenant", None, "globex") not in found.documents
    assert ("Assertion", "acme", "office-to-app") in found.documents
    assert {"kind": "empty-group", "subject": "acme/hwb-nobody", "by": []} in found.lint
    assert all(f["subject"].startswith("acme/") for f in found.lint)
    assert compliance(catalog, "globex").assertions == []


def test_every_matrix_cell_agrees_with_trace(catalog: Catalog) -> None:
    found = compliance(catalog, "acme")
    assert found.groups[0] == "acme/admins" and "acme/web" in found.groups
    assert found.groups_left_out == 0
    assert found.matrix[found.groups.index("acme/web")][found.groups.index("acme/app")] == {
        "reach": True,
        "services": ["tcp/8000-8080"],
        "rules": ["acme/shop/web-to-app"],
    }
    probes = ["tcp/22", "tcp/80", "tcp/443", "tcp/5432", "tcp/8000", "icmp/echo-request"]
    for i, source in enumerate(found.groups):
        for j, destination in enumerate(found.groups):
            cell = found.matrix[i][j]
            pairs = [
                (a, b)
                for a in _addresses(catalog, source)
                for b in _addresses(catalog, destination)
                if a != b
            ]
            if cell["reach"]:  # some pair is allowed on the first service listed
                service = _concrete(cell["services"][0])
                assert any(trace(catalog, a, b, service).verdict == "allow" for a, b in pairs)
            else:
                for a, b in pairs:
                    for s in probes:
                        assert trace(catalog, a, b, s).verdict != "allow", (a, b, s)


def _concrete(service: str) -> str:
    """One case of a compressed service: `tcp/8000-8080` -> `tcp/8000`, `tcp` -> `tcp/1`."""
    if service == "any":
        return "tcp/1"
    if "/" not in service:
        return f"{service}/1"
    proto, _, ports = service.partition("/")
    return f"{proto}/{ports.split('-')[0]}" if ports[0].isdigit() else service


def _addresses(catalog: Catalog, group: str) -> list[str]:
    """IPv4 addresses a group stands for: its workloads', and a CIDR's first two."""
    g = catalog.config.groups[group]
    nets = [ip_network(c) for c in g.cidrs if ":" not in c]
    out: list[str] = [str(n[k]) for n in nets for k in range(min(2, n.num_addresses))]
    for w in catalog.workloads.values():
        labels = w.selector_labels()
        if (g.selector is not None and g.selector.matches(labels)) or w.key in g.members:
            out.extend(ip for i in w.interfaces for ip in i.ips if "." in ip)
    for nested in g.groups:
        out.extend(_addresses(catalog, nested))
    return out


def test_scope() -> None:
    assert in_scope(None, "acme") and in_scope("acme", "acme") and not in_scope("x", "acme")
    assert in_scope("x", None)
