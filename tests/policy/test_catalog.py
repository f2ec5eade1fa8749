"""Tests for `hyperwall.policy.catalog`: checks across documents, and reference resolution.

A document set with problems (duplicates, unknown tenants and references, cross-tenant
references, group cycles, MAC/IP addresses claimed twice) must be refused with every issue
at once, each naming file, 1-based document number and field path. A valid set must resolve
every reference to its key: qualified provider references, tenant Services shadowing
provider Services of the same name, inline services.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from hyperwall.io.files import load_catalog
from hyperwall.policy.catalog import build_catalog
from hyperwall.policy.errors import DocumentsInvalid, Issue, Source
from hyperwall.policy.model import Catalog, Peer
from hyperwall.policy.ports import PortMatch

API = "hyperwall.io/v1"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def meta(name: str, tenant: str | None, **extra: Any) -> dict[str, Any]:
    return {"name": name, **({"tenant": tenant} if tenant else {}), **extra}


def tenant(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Tenant", "metadata": {"name": name}, "spec": spec}


def workload(
    name: str,
    owner: str | None,
    mac: str,
    ips: list[str],
    host: str = "hv1",
    labels: dict[str, str] | None = None,
    more: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    interfaces = [{"name": "eth0", "mac": mac, "ips": ips}, *(more or [])]
    return {
        "apiVersion": API,
        "kind": "Workload",
        "metadata": meta(name, owner, labels=labels or {}),
        "spec": {"host": host, "interfaces": interfaces},
    }


def group(name: str, owner: str | None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Group", "metadata": meta(name, owner), "spec": spec}


def service(name: str, owner: str | None, ports: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Service",
        "metadata": meta(name, owner),
        "spec": {"ports": ports},
    }


def policy(
    name: str, owner: str | None, rules: list[dict[str, Any]], **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Policy",
        "metadata": meta(name, owner),
        "spec": {"rules": rules, **spec},
    }


def rule(
    name: str = "r", action: str = "allow", src: list[dict[str, str]] | None = None, **fields: Any
) -> dict[str, Any]:
    """A rule; `src` is its `from` (a Python keyword)."""
    return {"name": name, "action": action, **({"from": src} if src is not None else {}), **fields}


BASE: list[dict[str, Any]] = [
    tenant("acme"),
    tenant("globex"),
    workload("web-1", "acme", "52:54:00:01:00:01", ["10.1.0.1", "fd00:1::1"], labels={"r": "w"}),
    workload("db-1", "acme", "52:54:00:01:00:02", ["10.1.0.2"]),
    workload("web-1", "globex", "52:54:00:02:00:01", ["10.2.0.1"]),
    workload("dns-1", None, "52:54:00:00:00:53", ["10.0.0.53"]),
    group("web", "acme", selector='r == "w"'),
    group("web", "globex", members=["web-1"]),
    group("dns", None, members=["dns-1"]),
    service("https", None, ["tcp/443"]),
]


def with_sources(docs: Iterable[dict[str, Any]], file: str = "set.yaml") -> list[Any]:
    return [(doc, Source(file, i + 1)) for i, doc in enumerate(docs)]


def build(*extra: dict[str, Any]) -> Catalog:
    """BASE (documents 1-10 of set.yaml) plus `extra` (documents 11...)."""
    return build_catalog(with_sources([*BASE, *extra]))


def issues_of(*extra: dict[str, Any]) -> list[Issue]:
    with pytest.raises(DocumentsInvalid) as info:
        build(*extra)
    return info.value.issues


EXTRA = len(BASE) + 1  # document number of the first extra document


def only_issue(*extra: dict[str, Any]) -> Issue:
    issues = issues_of(*extra)
    assert len(issues) == 1, [str(i) for i in issues]
    return issues[0]


def assert_issue(issue: Issue, document: int, path: str, *fragments: str) -> None:
    assert (issue.source.file, issue.source.document, issue.path) == ("set.yaml", document, path)
    text = f"{issue.message} {issue.expected}"
    for fragment in fragments:
        assert fragment in text, str(issue)
    assert issue.expected or "expected" in issue.message, str(issue)


def test_base_set_is_valid() -> None:
    catalog = build()
    assert sorted(catalog.workloads) == ["acme/db-1", "acme/web-1", "dns-1", "globex/web-1"]
    assert sorted(catalog.config.groups) == ["acme/web", "dns", "globex/web"]


# --- duplicates --------------------------------------------------------------------------


def test_duplicate_kind_tenant_name_in_one_file() -> None:
    issue = only_issue(group("web", "acme", cidrs=["192.0.2.0/24"]))
    assert_issue(issue, EXTRA, "metadata.name", "duplicate Group 'acme/web'", "set.yaml document 7")


def test_duplicate_across_two_files(tmp_path: Path) -> None:
    docs = [tenant("acme"), service("https", None, ["tcp/443"])]
    (tmp_path / "a.yaml").write_text(yaml.safe_dump_all(docs))
    (tmp_path / "b.yaml").write_text(
        yaml.safe_dump_all([group("g", "acme"), service("https", None, ["tcp/8443"])])
    )
    with pytest.raises(DocumentsInvalid) as info:
        load_catalog([tmp_path])
    [issue] = info.value.issues
    assert issue.source == Source(str(tmp_path / "b.yaml"), 2)
    assert issue.path == "metadata.name"
    assert "duplicate Service 'https'" in issue.message
    assert f"{tmp_path / 'a.yaml'} document 2" in issue.expected


def test_same_name_in_other_kind_or_other_tenant_is_not_a_duplicate() -> None:
    catalog = build(
        service("web", "acme", ["tcp/80"]),  # a Service named like acme's Group web
        group("web", None),  # a provider Group named like the tenants' groups
        policy("web", "acme", []),
        policy("web", "globex", []),
    )
    assert {"acme/web", "globex/web", "web", "dns"} == set(catalog.config.groups)
    assert {"acme/web", "globex/web"} == set(catalog.config.policies)
    assert "acme/web" in catalog.config.services


def test_duplicate_tenant() -> None:
    assert_issue(only_issue(tenant("acme")), EXTRA, "metadata.name", "duplicate Tenant 'acme'")


# --- tenants -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        workload("w", "initech", "52:54:00:09:00:01", ["10.9.0.1"]),
        group("g", "initech"),
        service("s", "initech", ["tcp/1"]),
        policy("p", "initech", []),
    ],
    ids=["Workload", "Group", "Service", "Policy"],
)
def test_unknown_tenant(doc: dict[str, Any]) -> None:
    issue = only_issue(doc)
    assert_issue(issue, EXTRA, "metadata.tenant", "unknown tenant 'initech'", "Tenant")


def test_tenant_with_metadata_tenant() -> None:
    doc = tenant("initech")
    doc["metadata"]["tenant"] = "acme"
    assert_issue(only_issue(doc), EXTRA, "metadata.tenant", "a Tenant has no tenant")


# --- unknown references ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "path", "fragments"),
    [
        (
            policy("p", "acme", [rule(), rule("r2", src=[{"group": "wbe"}])]),
            "spec.rules[1].from[0].group",
            ["unknown Group 'wbe'", "tenant 'acme'"],
        ),
        (
            policy("p", "acme", [rule(to=[{"cidr": "10.0.0.0/8"}, {"workload": "web-9"}])]),
            "spec.rules[0].to[1].workload",
            ["unknown Workload 'web-9'", "tenant 'acme'"],
        ),
        (
            policy("p", "acme", [rule(services=["https", "tcp/80", "smtp"])]),
            "spec.rules[0].services[2]",
            ["unknown service 'smtp'", "tenant 'acme' or provider scope", "tcp/443"],
        ),
        (
            policy("p", None, [rule(services=["smtp"])]),
            "spec.rules[0].services[0]",
            ["unknown service 'smtp'", "inline port"],
        ),
        (
            policy("p", "acme", [], appliedTo={"group": "db"}),
            "spec.appliedTo.group",
            ["unknown Group 'db'"],
        ),
        (
            policy("p", "acme", [], appliedTo={"workload": "db-2"}),
            "spec.appliedTo.workload",
            ["unknown Workload 'db-2'"],
        ),
        (
            group("g", "acme", members=["web-1", "web-2"]),
            "spec.members[1]",
            ["unknown Workload 'web-2'", "tenant 'acme'"],
        ),
        (
            group("g", "acme", groups=["web", "db"]),
            "spec.groups[1]",
            ["unknown Group 'db'"],
        ),
        (
            group("g", None, members=["web-1"]),  # unqualified in a provider document
            "spec.members[0]",
            ["unknown Workload 'web-1'", "provider scope"],
        ),
        (
            group("g", None, members=["acme/web-2"]),
            "spec.members[0]",
            ["unknown Workload 'acme/web-2'", "tenant 'acme'"],
        ),
        (
            group("g", None, groups=["initech/web"]),
            "spec.groups[0]",
            ["unknown Group 'initech/web'"],
        ),
        (
            policy("p", "acme", [rule(src=[{"group": "dns"}])]),  # a provider group
            "spec.rules[0].from[0].group",
            ["unknown Group 'dns'", "tenant 'acme'"],
        ),
        (
            policy("p", "acme", [rule(to=[{"workload": "dns-1"}])]),  # a provider workload
            "spec.rules[0].to[0].workload",
            ["unknown Workload 'dns-1'"],
        ),
    ],
    ids=[
        "rule-group",
        "rule-workload",
        "tenant-service",
        "provider-service",
        "appliedTo-group",
        "appliedTo-workload",
        "member",
        "nested-group",
        "provider-unqualified-member",
        "provider-qualified-member",
        "provider-unknown-tenant-group",
        "tenant-names-provider-group",
        "tenant-names-provider-workload",
    ],
)
def test_unknown_reference(doc: dict[str, Any], path: str, fragments: list[str]) -> None:
    assert_issue(only_issue(doc), EXTRA, path, *fragments)


def test_tenant_service_is_not_visible_to_other_scopes() -> None:
    issues = issues_of(
        service("backup", "acme", ["tcp/873"]),
        policy("p", "globex", [rule(services=["backup"])]),
        policy("q", None, [rule(services=["backup"])]),
    )
    assert [(i.source.document, i.path) for i in issues] == [
        (EXTRA + 1, "spec.rules[0].services[0]"),
        (EXTRA + 2, "spec.rules[0].services[0]"),
    ]
    assert all("unknown service 'backup'" in i.message for i in issues)


# --- cross-tenant references -------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "path", "kind"),
    [
        (
            policy("p", "acme", [rule(), rule("r2", src=[{"group": "globex/web"}])]),
            "spec.rules[1].from[0].group",
            "Group",
        ),
        (
            policy("p", "acme", [rule(to=[{"workload": "globex/web-1"}])]),
            "spec.rules[0].to[0].workload",
            "Workload",
        ),
        (
            policy("p", "acme", [], appliedTo={"group": "globex/web"}),
            "spec.appliedTo.group",
            "Group",
        ),
        (group("g", "acme", members=["globex/web-1"]), "spec.members[0]", "Workload"),
        (group("g", "acme", groups=["web", "globex/web"]), "spec.groups[1]", "Group"),
    ],
    ids=["rule-from-group", "rule-to-workload", "appliedTo", "members", "groups"],
)
def test_cross_tenant_reference(doc: dict[str, Any], path: str, kind: str) -> None:
    issue = only_issue(doc)
    assert_issue(issue, EXTRA, path, "cross-tenant", f"{kind} of tenant 'acme'")
    assert "globex/" in issue.message


def test_tenant_may_name_its_own_objects_qualified() -> None:
    catalog = build(group("g", "acme", members=["acme/web-1"], groups=["acme/web"]))
    assert catalog.config.groups["acme/g"].members == ("acme/web-1",)
    assert catalog.config.groups["acme/g"].groups == ("acme/web",)


# --- group cycles ------------------------------------------------------------------------


def test_two_group_cycle_is_reported_once() -> None:
    issues = issues_of(group("a", "acme", groups=["b"]), group("b", "acme", groups=["a"]))
    assert len(issues) == 1
    [issue] = issues
    assert issue.source.document in (EXTRA, EXTRA + 1)
    assert issue.path.startswith("spec.groups")
    assert "cycle" in issue.message
    assert "acme/a" in issue.message and "acme/b" in issue.message
    assert issue.expected


def test_self_loop() -> None:
    issue = only_issue(group("a", None, groups=["a"], cidrs=["192.0.2.0/24"]))
    assert issue.source.document == EXTRA
    assert issue.path.startswith("spec.groups")
    assert "cycle" in issue.message and "a -> a" in issue.message


def test_longer_cycle_and_a_separate_self_loop() -> None:
    issues = issues_of(
        group("a", "acme", groups=["b"]),
        group("b", "acme", groups=["c", "web"]),
        group("c", "acme", groups=["a"]),
        group("s", "globex", groups=["s"]),
    )
    assert len(issues) == 2
    messages = sorted(i.message for i in issues)
    assert "acme/a" in messages[0] and "acme/b" in messages[0] and "acme/c" in messages[0]
    assert "globex/s -> globex/s" in messages[1]


def test_shared_nested_group_is_not_a_cycle() -> None:
    catalog = build(
        group("leaf", "acme", cidrs=["192.0.2.0/24"]),
        group("left", "acme", groups=["leaf"]),
        group("right", "acme", groups=["leaf"]),
        group("top", "acme", groups=["left", "right", "leaf"]),
    )
    assert catalog.config.groups["acme/top"].groups == ("acme/left", "acme/right", "acme/leaf")


# --- addresses claimed twice -------------------------------------------------------------


def test_mac_claimed_by_two_workloads() -> None:
    issue = only_issue(workload("web-2", "acme", "52:54:00:01:00:01", ["10.1.0.9"]))
    assert_issue(
        issue,
        EXTRA,
        "spec.interfaces[0].mac",
        "MAC 52:54:00:01:00:01",
        "'acme/web-1'",
        "set.yaml document 3",
        "unique",
    )


def test_mac_claimed_twice_in_other_spelling() -> None:
    issue = only_issue(workload("web-2", "globex", "52:54:00:01:00:02".upper(), ["10.2.0.9"]))
    assert issue.path == "spec.interfaces[0].mac"
    assert "'acme/db-1'" in issue.message


def test_ip_claimed_by_two_workloads_across_tenants() -> None:
    issue = only_issue(
        workload(
            "app-1",
            "globex",
            "52:54:00:02:00:09",
            ["10.2.0.9"],
            more=[{"name": "eth1", "mac": "52:54:00:02:01:09", "ips": ["10.2.0.10", "10.1.0.2"]}],
        )
    )
    assert_issue(issue, EXTRA, "spec.interfaces[1].ips[1]", "IP 10.1.0.2", "'acme/db-1'")


def test_ipv6_claimed_twice_in_other_spelling() -> None:
    issue = only_issue(workload("w", "acme", "52:54:00:01:00:09", ["FD00:1:0::0001"]))
    assert issue.path == "spec.interfaces[0].ips[0]"
    assert "fd00:1::1" in issue.message and "'acme/web-1'" in issue.message


def test_ip_given_twice_in_one_workload() -> None:
    issue = only_issue(
        workload(
            "w",
            "acme",
            "52:54:00:01:00:09",
            ["10.1.0.9"],
            more=[{"name": "eth1", "mac": "52:54:00:01:01:09", "ips": ["10.1.0.9"]}],
        )
    )
    assert issue.path == "spec.interfaces[1].ips[0]"
    assert "10.1.0.9" in issue.message and "twice" in issue.message


# --- every error at once -----------------------------------------------------------------


def test_every_error_of_a_document_set_is_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "tenants.yaml").write_text(yaml.safe_dump_all([tenant("acme"), tenant("acme")]))
    (tmp_path / "workloads.yaml").write_text(
        yaml.safe_dump_all(
            [
                workload("web-1", "acme", "52:54:00:01:00:01", ["10.1.0.1"]),
                workload("web-2", "acme", "52:54:00:01:00:01", ["10.1.0.1"]),
                workload("Web-3", "acme", "52:54:00:01:00:03", ["10.1.0.3"]),
            ]
        )
    )
    (tmp_path / "policy.yaml").write_text(
        yaml.safe_dump_all(
            [
                group("a", "acme", groups=["b"]),
                group("b", "acme", groups=["a"]),
                service("tcp", None, ["tcp/1"]),
                policy(
                    "p",
                    "acme",
                    [
                        rule(src=[{"group": "nope"}]),
                        rule("r2", to=[{"workload": "globex/x"}], services=["smtp"]),
                    ],
                ),
                policy("q", "initech", [rule(direction="sideways")]),
            ]
        )
    )
    with pytest.raises(DocumentsInvalid) as info:
        load_catalog([tmp_path])
    issues = info.value.issues
    cycles = [i for i in issues if "cycle" in i.message]
    assert len(cycles) == 1
    assert Path(cycles[0].source.file).name == "policy.yaml"
    assert (cycles[0].source.document, cycles[0].path) in {(1, "spec.groups"), (2, "spec.groups")}
    found = {(Path(i.source.file).name, i.source.document, i.path) for i in issues}
    assert found - {
        (Path(cycles[0].source.file).name, cycles[0].source.document, "spec.groups")
    } == {
        ("tenants.yaml", 2, "metadata.name"),
        ("workloads.yaml", 2, "spec.interfaces[0].mac"),
        ("workloads.yaml", 2, "spec.interfaces[0].ips[0]"),
        ("workloads.yaml", 3, "metadata.name"),
        ("policy.yaml", 3, "metadata.name"),
        ("policy.yaml", 4, "spec.rules[0].from[0].group"),
        ("policy.yaml", 4, "spec.rules[1].to[0].workload"),
        ("policy.yaml", 4, "spec.rules[1].services[0]"),
        ("policy.yaml", 5, "spec.rules[0].direction"),
    }
    assert len(issues) == 10


def test_nothing_is_returned_when_one_document_is_bad() -> None:
    with pytest.raises(DocumentsInvalid):
        build(service("ok", None, ["tcp/1"]), service("bad", None, ["tcp/0"]))


# --- resolution of a valid set -----------------------------------------------------------


def test_qualified_provider_references_resolve_to_tenant_objects() -> None:
    catalog = build(
        group("acme-web", None, groups=["acme/web", "dns"], members=["acme/db-1", "dns-1"]),
        policy(
            "audit",
            None,
            [rule(src=[{"group": "acme/web"}], to=[{"workload": "globex/web-1"}])],
            appliedTo={"workload": "acme/db-1"},
        ),
    )
    g = catalog.config.groups["acme-web"]
    assert (g.tenant, g.groups, g.members) == (None, ("acme/web", "dns"), ("acme/db-1", "dns-1"))
    p = catalog.config.policies["audit"]
    assert p.applied_to == Peer("workload", "acme/db-1")
    assert p.rules[0].sources == (Peer("group", "acme/web"),)
    assert p.rules[0].destinations == (Peer("workload", "globex/web-1"),)
    assert p.rules[0].id == "audit/r"


def test_tenant_references_resolve_within_the_tenant() -> None:
    catalog = build(
        policy(
            "p",
            "globex",
            [rule(src=[{"group": "web"}], to=[{"workload": "web-1"}])],
            appliedTo={"group": "web"},
        )
    )
    p = catalog.config.policies["globex/p"]
    assert p.applied_to == Peer("group", "globex/web")
    assert p.rules[0].sources == (Peer("group", "globex/web"),)
    assert p.rules[0].destinations == (Peer("workload", "globex/web-1"),)
    assert p.rules[0].id == "globex/p/r"


def test_tenant_service_shadows_provider_service_of_the_same_name() -> None:
    catalog = build(
        service("https", "acme", ["tcp/8443"]),
        policy("p", "acme", [rule(services=["https"])]),
        policy("p", "globex", [rule(services=["https"])]),
        policy("p", None, [rule(services=["https"])]),
    )
    policies = catalog.config.policies
    assert policies["acme/p"].rules[0].services == (PortMatch("tcp", 8443, 8443, False),)
    assert policies["globex/p"].rules[0].services == (PortMatch("tcp", 443, 443, False),)
    assert policies["p"].rules[0].services == (PortMatch("tcp", 443, 443, False),)
    assert catalog.config.services["acme/https"].ports == (PortMatch("tcp", 8443, 8443, False),)
    assert catalog.config.services["https"].ports == (PortMatch("tcp", 443, 443, False),)


def test_inline_and_named_services_are_merged_without_duplicates() -> None:
    catalog = build(
        service("web", None, ["tcp/80", "tcp/443"]),
        policy(
            "p",
            "acme",
            [
                rule(services=["tcp/3306", "web", "https", "icmp/echo-request", "udp"]),
                rule("any-1", services=[]),
                rule("any-2"),
                rule("any-3", services=["any"]),
            ],
        ),
    )
    rules = catalog.config.policies["acme/p"].rules
    assert rules[0].services == (
        PortMatch("tcp", 3306, 3306, False),
        PortMatch("tcp", 80, 80, False),
        PortMatch("tcp", 443, 443, False),
        PortMatch("icmp", 8, 8, False),
        PortMatch("udp"),
    )
    assert rules[1].services is None
    assert rules[2].services is None
    assert rules[3].services == (PortMatch("any"),)


def test_rule_fields_and_selector_scope() -> None:
    catalog = build(
        policy(
            "p",
            "acme",
            [
                rule(
                    "sel",
                    "reject",
                    direction="out",
                    log=True,
                    to=[{"selector": 'r == "w"'}, {"cidr": "192.0.2.0/24"}],
                )
            ],
            tier="emergency",
            priority=5,
            appliedTo={"selector": "all()"},
        ),
        policy("q", None, [rule(src=[{"selector": "all()"}])]),
    )
    p = catalog.config.policies["acme/p"]
    assert (p.tenant, p.name, p.tier, p.priority) == ("acme", "p", "emergency", 5)
    assert p.applied_to is not None and p.applied_to.kind == "selector"
    assert p.applied_to.scope == "acme"
    r = p.rules[0]
    assert (r.id, r.name, r.action, r.direction, r.log, r.sources) == (
        "acme/p/sel",
        "sel",
        "reject",
        "out",
        True,
        (),
    )
    assert [(d.kind, d.value, d.scope) for d in r.destinations] == [
        ("selector", 'r == "w"', "acme"),
        ("cidr", "192.0.2.0/24", None),
    ]
    q = catalog.config.policies["q"]
    assert q.rules[0].sources[0].scope is None  # a provider selector spans every tenant


def test_workloads_and_tenants_are_resolved() -> None:
    catalog = build(tenant("initech", defaultAction="allow", logDefault=True))
    assert catalog.config.tenants["initech"].default_action == "allow"
    assert catalog.config.tenants["initech"].log_default
    assert catalog.config.tenants["acme"].default_action == "drop"
    w = catalog.workloads["acme/web-1"]
    assert (w.name, w.tenant, w.host, dict(w.labels)) == ("web-1", "acme", "hv1", {"r": "w"})
    assert w.interfaces[0].ips == ("10.1.0.1", "fd00:1::1")
    assert w.selector_labels() == {
        "r": "w",
        "hyperwall.io/name": "web-1",
        "hyperwall.io/tenant": "acme",
        "hyperwall.io/host": "hv1",
    }
    assert "hyperwall.io/tenant" not in catalog.workloads["dns-1"].selector_labels()


def test_order_of_documents_does_not_matter() -> None:
    extra = [
        policy("p", "acme", [rule(src=[{"group": "g"}])]),
        group("g", "acme", groups=["web"]),
    ]
    forward = build_catalog(with_sources([*BASE, *extra]))
    backward = build_catalog(with_sources(list(reversed([*BASE, *extra]))))
    assert forward.config.policies == backward.config.policies
    assert forward.config.groups == backward.config.groups


def test_examples_resolve() -> None:
    catalog = load_catalog([EXAMPLES])
    cfg = catalog.config
    counts = (len(cfg.tenants), len(catalog.workloads), len(cfg.groups))
    assert counts == (2, 13, 16)
    assert (len(cfg.services), len(cfg.policies)) == (10, 5)
    assert cfg.groups["pci-scope"].groups == ("acme/pci",)
    assert cfg.services["acme/backup"].ports == (PortMatch("tcp", 873, 873, False),)
    db_backup = next(r for r in cfg.policies["acme/shop"].rules if r.name == "db-backup")
    assert db_backup.services == (PortMatch("tcp", 873, 873, False),)
    web_to_db = next(r for r in cfg.policies["globex/app"].rules if r.name == "web-to-db")
    assert web_to_db.services == (PortMatch("tcp", 3306, 3306, False),)
