"""Declared documents + discovered domains -> one catalog; a bad domain fails closed alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hyperwall.analysis.trace import trace
from hyperwall.hypervisor.domain_xml import ParsedDomain, domain_xml, parse_domain
from hyperwall.hypervisor.merge import merge
from hyperwall.io.files import read_documents
from hyperwall.policy.catalog import build_catalog
from hyperwall.policy.documents import PolicyDoc, WorkloadDoc
from hyperwall.policy.errors import DocumentsInvalid, Source

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def declared() -> list[tuple[Any, Source]]:
    docs, issues = read_documents([EXAMPLES])
    assert not issues
    return docs


def hv1_domains(**changes: dict[str, Any]) -> list[ParsedDomain]:
    """The examples' hv1 workloads as the domains libvirt on hv1 would report."""
    out = []
    for raw, _ in declared():
        if raw.get("kind") == "Workload" and raw["spec"]["host"] == "hv1":
            raw = {
                **raw,
                "metadata": {**raw["metadata"], **changes.get(raw["metadata"]["name"], {})},
            }
            out.append(parse_domain(domain_xml(WorkloadDoc.model_validate(raw)), "hv1"))
    return out


def test_discovered_domains_replace_the_hosts_declared_workloads() -> None:
    merged = merge(declared(), hv1_domains(), "hv1")
    reference = build_catalog(declared())
    assert merged.unmanaged == {}
    assert merged.catalog.workloads == reference.workloads
    assert merged.catalog.config == reference.config
    assert set(merged.managed) == {w.name for w in reference.workloads.values() if w.host == "hv1"}


def test_a_workload_only_declared_for_this_host_is_gone() -> None:
    domains = [d for d in hv1_domains() if d.name != "web-1"]
    merged = merge(declared(), domains, "hv1")
    assert "acme/web-1" not in merged.catalog.workloads
    assert "acme/web-2" in merged.catalog.workloads  # hv2's stay declared


def test_relabelled_domain_changes_the_verdict() -> None:
    before = merge(declared(), hv1_domains(), "hv1").catalog
    assert trace(before, "lb-1", "web-1", "http").verdict == "allow"
    relabelled = hv1_domains(**{"web-1": {"labels": {"app": "shop", "role": "app", "env": "prod"}}})
    after = merge(declared(), relabelled, "hv1").catalog
    assert trace(after, "lb-1", "web-1", "http").verdict == "drop"


def test_unknown_tenant_makes_only_that_domain_unmanaged() -> None:
    domains = hv1_domains(**{"web-1": {"tenant": "nosuch"}})
    merged = merge(declared(), domains, "hv1")
    assert "web-1" in merged.unmanaged and "nosuch" in merged.unmanaged["web-1"]
    assert "web-1" not in merged.managed
    assert not any(w.name == "web-1" for w in merged.catalog.workloads.values())
    assert "acme/app-1" in merged.catalog.workloads


def test_embedded_policy_naming_a_missing_group_fails_closed() -> None:
    raw = next(
        r for r, _ in declared() if r.get("kind") == "Workload" and r["metadata"]["name"] == "app-1"
    )
    workload = WorkloadDoc.model_validate(raw)
    good = PolicyDoc.model_validate(
        {
            "apiVersion": "hyperwall.io/v1",
            "kind": "Policy",
            "metadata": {"name": "vm-app-1", "tenant": "acme"},
            "spec": {
                "tier": "emergency",
                "appliedTo": {"workload": "app-1"},
                "rules": [{"name": "no-ssh", "action": "drop", "services": ["tcp/22"]}],
            },
        }
    )
    raw_bad = good.model_dump(by_alias=True, exclude_none=True)
    raw_bad["spec"]["rules"][0]["to"] = [{"group": "nosuch"}]
    bad = PolicyDoc.model_validate(raw_bad)
    others = [d for d in hv1_domains() if d.name != "app-1"]
    ok = merge(declared(), [*others, parse_domain(domain_xml(workload, good), "hv1")], "hv1")
    assert "acme/vm-app-1" in ok.catalog.config.policies
    ingress = trace(ok.catalog, "web-1", "app-1", "tcp/22").ingress
    assert ingress is not None and ingress.rule == "acme/vm-app-1/no-ssh"
    refused = merge(declared(), [*others, parse_domain(domain_xml(workload, bad), "hv1")], "hv1")
    assert "app-1" in refused.unmanaged
    assert "hw:workload/hw:policy/hw:rule[1]/hw:to[1]" in refused.unmanaged["app-1"]
    assert "acme/vm-app-1" not in refused.catalog.config.policies
    assert "acme/app-1" not in refused.catalog.workloads


def test_declared_workload_elsewhere_loses_to_the_discovered_one() -> None:
    moved = [d for d in hv1_domains()]
    web2 = next(
        r for r, _ in declared() if r.get("kind") == "Workload" and r["metadata"]["name"] == "web-2"
    )
    moved.append(parse_domain(domain_xml(WorkloadDoc.model_validate(web2)), "hv1"))
    merged = merge(declared(), moved, "hv1")
    assert merged.conflicts == ("acme/web-2",)
    assert merged.catalog.workloads["acme/web-2"].host == "hv1"


def test_bad_declared_documents_still_raise() -> None:
    docs = declared()
    raw, source = docs[0]
    broken = [({**raw, "kind": "Nonsense"}, source), *docs[1:]]
    with pytest.raises(DocumentsInvalid):
        merge(broken, hv1_domains(), "hv1")
