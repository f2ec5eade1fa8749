"""Tests for `hyperwall.policy.documents`: one document's shape, names and values.

`parse_document` must turn every malformed field into an `Issue` carrying the document's
source (file, 1-based document number), the field path (`spec.rules[1].from[0].group`) and a
message that says what is wrong and what was expected, and must report every problem of a
document at once. Cross-document checks are in `test_catalog`.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from hyperwall.policy.documents import (
    GroupDoc,
    PolicyDoc,
    ServiceDoc,
    TenantDoc,
    WorkloadDoc,
    parse_document,
)
from hyperwall.policy.errors import DocumentsInvalid, Issue, Source, join_path

API = "hyperwall.io/v1"
SOURCE = Source("docs/acme.yaml", 7)

TENANT: dict[str, Any] = {
    "apiVersion": API,
    "kind": "Tenant",
    "metadata": {"name": "acme"},
    "spec": {"defaultAction": "drop", "logDefault": True},
}
WORKLOAD: dict[str, Any] = {
    "apiVersion": API,
    "kind": "Workload",
    "metadata": {"name": "web-1", "tenant": "acme", "labels": {"role": "web", "pci": "true"}},
    "spec": {
        "host": "hv1",
        "interfaces": [
            {"name": "eth0", "mac": "52:54:00:00:00:01", "ips": ["10.0.0.1", "fd00::1"]},
            {"name": "eth1", "mac": "52:54:00:00:01:01", "ips": ["10.0.1.1"]},
        ],
    },
}
GROUP: dict[str, Any] = {
    "apiVersion": API,
    "kind": "Group",
    "metadata": {"name": "web", "tenant": "acme"},
    "spec": {
        "selector": 'role == "web" && env in {"prod", "stage"}',
        "members": ["web-1"],
        "cidrs": ["192.0.2.0/24", "2001:db8::/32"],
        "groups": ["other"],
    },
}
SERVICE: dict[str, Any] = {
    "apiVersion": API,
    "kind": "Service",
    "metadata": {"name": "web"},
    "spec": {"ports": ["tcp/443", "tcp/8000-8080"]},
}
POLICY: dict[str, Any] = {
    "apiVersion": API,
    "kind": "Policy",
    "metadata": {"name": "shop", "tenant": "acme"},
    "spec": {
        "tier": "environment",
        "priority": 100,
        "appliedTo": {"selector": 'app == "shop"'},
        "rules": [
            {
                "name": "lb-to-web",
                "action": "allow",
                "direction": "in",
                "from": [{"group": "lb"}, {"cidr": "198.51.100.0/24"}],
                "to": [{"group": "web"}],
                "services": ["https", "tcp/80"],
                "log": True,
            },
            {
                "name": "web-out",
                "action": "drop",
                "from": [{"group": "web"}, {"workload": "web-1"}],
                "to": [{"selector": 'role == "db"'}],
            },
        ],
    },
}
DOCS = {
    "Tenant": TENANT,
    "Workload": WORKLOAD,
    "Group": GROUP,
    "Service": SERVICE,
    "Policy": POLICY,
}

DELETE = object()


def mutate(doc: dict[str, Any], parts: tuple[str | int, ...], value: object) -> dict[str, Any]:
    """A copy of `doc` with the field at `parts` set to `value` (or deleted)."""
    out = copy.deepcopy(doc)
    target: Any = out
    for part in parts[:-1]:
        target = target[part]
    if value is DELETE:
        del target[parts[-1]]
    else:
        target[parts[-1]] = value
    return out


def issues_of(raw: object) -> list[Issue]:
    doc, issues = parse_document(raw, SOURCE)
    assert (doc is None) == bool(issues)
    return issues


def only_issue(raw: object) -> Issue:
    issues = issues_of(raw)
    assert len(issues) == 1, [str(i) for i in issues]
    assert issues[0].source == SOURCE
    return issues[0]


def text_of(issue: Issue) -> str:
    return f"{issue.message} {issue.expected}"


def says_expected(issue: Issue) -> bool:
    return bool(issue.expected) or "expected" in issue.message


# --- valid documents ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(DOCS))
def test_every_valid_example_parses(kind: str) -> None:
    doc, issues = parse_document(copy.deepcopy(DOCS[kind]), SOURCE)
    assert issues == []
    assert doc is not None
    assert doc.kind == kind


def test_defaults() -> None:
    tenant, _ = parse_document(
        {"apiVersion": API, "kind": "Tenant", "metadata": {"name": "t"}}, SOURCE
    )
    assert isinstance(tenant, TenantDoc)
    assert (tenant.spec.defaultAction, tenant.spec.logDefault) == ("drop", False)
    policy, _ = parse_document(
        {
            "apiVersion": API,
            "kind": "Policy",
            "metadata": {"name": "p"},
            "spec": {"rules": [{"name": "r", "action": "pass"}]},
        },
        SOURCE,
    )
    assert isinstance(policy, PolicyDoc)
    assert (policy.spec.tier, policy.spec.priority, policy.spec.appliedTo) == (
        "application",
        1000,
        None,
    )
    rule = policy.spec.rules[0]
    assert (rule.direction, rule.from_, rule.to, rule.services, rule.log) == (
        "both",
        [],
        [],
        None,
        False,
    )
    group, _ = parse_document(
        {"apiVersion": API, "kind": "Group", "metadata": {"name": "g"}}, SOURCE
    )
    assert isinstance(group, GroupDoc)
    assert (group.spec.selector, group.spec.members, group.spec.cidrs, group.spec.groups) == (
        None,
        [],
        [],
        [],
    )


def test_values_are_normalised() -> None:
    raw = mutate(WORKLOAD, ("spec", "interfaces", 0, "mac"), "52:54:00:AB:CD:EF")
    raw = mutate(raw, ("spec", "interfaces", 0, "ips"), ["FD00:0:0::0011", "10.0.0.1"])
    doc, issues = parse_document(raw, SOURCE)
    assert issues == []
    assert isinstance(doc, WorkloadDoc)
    assert doc.spec.interfaces[0].mac == "52:54:00:ab:cd:ef"
    assert doc.spec.interfaces[0].ips == ["fd00::11", "10.0.0.1"]


@pytest.mark.parametrize("name", ["a", "0", "web-1", "a.b-c", "x" * 63, "1-2-3", "acme.example"])
def test_good_names(name: str) -> None:
    assert issues_of(mutate(SERVICE, ("metadata", "name"), name)) == []


def test_provider_documents_may_use_qualified_references() -> None:
    raw = mutate(GROUP, ("metadata",), {"name": "pci-scope"})
    raw = mutate(raw, ("spec", "groups"), ["acme/pci"])
    raw = mutate(raw, ("spec", "members"), ["acme/db-1", "dns-1"])
    assert issues_of(raw) == []


def test_labels_on_other_kinds_are_allowed() -> None:
    assert issues_of(mutate(POLICY, ("metadata", "labels"), {"owner": "team-a"})) == []


def test_empty_services_mean_any() -> None:
    doc, issues = parse_document(mutate(POLICY, ("spec", "rules", 0, "services"), []), SOURCE)
    assert issues == []
    assert isinstance(doc, PolicyDoc)
    assert doc.spec.rules[0].services == []


# --- one problem, one issue --------------------------------------------------------------

# (kind, field to change, new value, reported path, fragments of message + expected,
#  whether the issue must say what was expected)
CASES: list[tuple[str, tuple[str | int, ...], object, str, list[str], bool]] = [
    # unknown kind
    ("Tenant", ("kind",), "Firewall", "kind", ["Firewall", "Tenant", "Policy"], True),
    ("Tenant", ("kind",), DELETE, "kind", ["unknown kind", "Workload"], True),
    # unknown fields, at every depth
    ("Policy", ("specs",), {}, "specs", ["unknown field"], False),
    ("Policy", ("metadata", "lables"), {}, "metadata.lables", ["unknown field"], False),
    ("Policy", ("spec", "rule"), [], "spec.rule", ["unknown field"], False),
    ("Policy", ("spec", "aplliedTo"), {}, "spec.aplliedTo", ["unknown field"], False),
    ("Policy", ("spec", "rules", 1, "form"), [], "spec.rules[1].form", ["unknown field"], False),
    (
        "Policy",
        ("spec", "rules", 0, "from", 1, "net"),
        "10.0.0.0/8",
        "spec.rules[0].from[1].net",
        ["unknown field"],
        False,
    ),
    ("Policy", ("spec", "appliedTo", "tag"), "x", "spec.appliedTo.tag", ["unknown field"], False),
    (
        "Workload",
        ("spec", "interfaces", 1, "vlan"),
        5,
        "spec.interfaces[1].vlan",
        ["unknown field"],
        False,
    ),
    ("Tenant", ("spec", "default"), "drop", "spec.default", ["unknown field"], False),
    ("Service", ("spec", "port"), "tcp/80", "spec.port", ["unknown field"], False),
    # missing required fields
    ("Tenant", ("apiVersion",), DELETE, "apiVersion", ["missing"], False),
    ("Tenant", ("metadata",), DELETE, "metadata", ["missing"], False),
    ("Group", ("metadata", "name"), DELETE, "metadata.name", ["missing"], False),
    ("Workload", ("spec",), DELETE, "spec", ["missing"], False),
    ("Workload", ("spec", "host"), DELETE, "spec.host", ["missing"], False),
    ("Workload", ("spec", "interfaces"), DELETE, "spec.interfaces", ["missing"], False),
    (
        "Workload",
        ("spec", "interfaces", 1, "mac"),
        DELETE,
        "spec.interfaces[1].mac",
        ["missing"],
        False,
    ),
    (
        "Workload",
        ("spec", "interfaces", 0, "name"),
        DELETE,
        "spec.interfaces[0].name",
        ["missing"],
        False,
    ),
    ("Service", ("spec",), DELETE, "spec", ["missing"], False),
    ("Service", ("spec", "ports"), DELETE, "spec.ports", ["missing"], False),
    ("Policy", ("spec", "rules", 1, "action"), DELETE, "spec.rules[1].action", ["missing"], False),
    ("Policy", ("spec", "rules", 0, "name"), DELETE, "spec.rules[0].name", ["missing"], False),
    # wrong types
    ("Workload", ("metadata", "labels", "pci"), True, "metadata.labels.pci", ["a string"], True),
    (
        "Workload",
        ("metadata", "labels", "version"),
        1.1,
        "metadata.labels.version",
        ["a string"],
        True,
    ),
    ("Workload", ("metadata", "labels"), ["role"], "metadata.labels", ["a mapping"], True),
    ("Workload", ("metadata",), "web-1", "metadata", ["a mapping"], True),
    ("Workload", ("metadata", "name"), 42, "metadata.name", ["a string"], True),
    ("Workload", ("spec", "interfaces"), "eth0", "spec.interfaces", ["a list"], True),
    (
        "Workload",
        ("spec", "interfaces", 0, "mac"),
        188395530000,  # what YAML makes of an unquoted 52:54:00:...
        "spec.interfaces[0].mac",
        ["a string"],
        True,
    ),
    (
        "Workload",
        ("spec", "interfaces", 0, "ips"),
        "10.0.0.1",
        "spec.interfaces[0].ips",
        ["a list"],
        True,
    ),
    (
        "Workload",
        ("spec", "interfaces", 0, "ips", 0),
        167772161,
        "spec.interfaces[0].ips[0]",
        ["a string"],
        True,
    ),
    ("Tenant", ("spec", "logDefault"), "yes", "spec.logDefault", ["true or false"], True),
    ("Tenant", ("spec",), "drop", "spec", ["a mapping"], True),
    ("Policy", ("spec", "priority"), "high", "spec.priority", ["an integer"], True),
    ("Policy", ("spec", "priority"), "100", "spec.priority", ["an integer"], True),
    ("Policy", ("spec", "priority"), True, "spec.priority", ["an integer"], True),
    ("Policy", ("spec", "priority"), 1.5, "spec.priority", ["an integer"], True),
    ("Policy", ("spec", "rules", 0, "log"), "yes", "spec.rules[0].log", ["true or false"], True),
    ("Policy", ("spec", "rules"), {"name": "r"}, "spec.rules", ["a list"], True),
    (
        "Policy",
        ("spec", "rules", 0, "from"),
        {"group": "lb"},
        "spec.rules[0].from",
        ["a list"],
        True,
    ),
    ("Policy", ("spec", "rules", 0, "from", 0), "lb", "spec.rules[0].from[0]", ["a mapping"], True),
    (
        "Policy",
        ("spec", "rules", 0, "services"),
        "https",
        "spec.rules[0].services",
        ["a list"],
        True,
    ),
    ("Group", ("spec", "selector"), ["a"], "spec.selector", ["a string"], True),
    ("Group", ("spec", "members"), "web-1", "spec.members", ["a list"], True),
    # bad values of enumerations
    (
        "Tenant",
        ("apiVersion",),
        "hyperwall.io/v2",
        "apiVersion",
        ["hyperwall.io/v2", "hyperwall.io/v1"],
        True,
    ),
    (
        "Tenant",
        ("spec", "defaultAction"),
        "reject",
        "spec.defaultAction",
        ["'reject'", "'drop'", "'allow'"],
        True,
    ),
    (
        "Policy",
        ("spec", "tier"),
        "app",
        "spec.tier",
        ["'app'", "'application'", "'emergency'"],
        True,
    ),
    (
        "Policy",
        ("spec", "rules", 1, "action"),
        "deny",
        "spec.rules[1].action",
        ["'deny'", "'allow'", "'pass'"],
        True,
    ),
    (
        "Policy",
        ("spec", "rules", 0, "direction"),
        "ingress",
        "spec.rules[0].direction",
        ["'ingress'", "'in'", "'both'"],
        True,
    ),
    (
        "Policy",
        ("spec", "priority"),
        -1,
        "spec.priority",
        ["should be greater than or equal to 0"],
        False,
    ),
    # bad names
    ("Service", ("metadata", "name"), "Web", "metadata.name", ["'Web'", "lower-case"], True),
    ("Service", ("metadata", "name"), "web_1", "metadata.name", ["'web_1'", "lower-case"], True),
    ("Service", ("metadata", "name"), "x" * 64, "metadata.name", ["at most 63 characters"], True),
    (
        "Service",
        ("metadata", "name"),
        "-web",
        "metadata.name",
        ["'-web'", "starting and ending"],
        True,
    ),
    (
        "Service",
        ("metadata", "name"),
        "web-",
        "metadata.name",
        ["'web-'", "starting and ending"],
        True,
    ),
    ("Service", ("metadata", "name"), "", "metadata.name", ["bad name ''"], True),
    ("Service", ("metadata", "name"), "a/b", "metadata.name", ["bad name 'a/b'"], True),
    ("Policy", ("metadata", "tenant"), "Acme", "metadata.tenant", ["'Acme'", "lower-case"], True),
    ("Policy", ("spec", "rules", 1, "name"), "Web Out", "spec.rules[1].name", ["'Web Out'"], True),
    ("Workload", ("spec", "host"), "HV1", "spec.host", ["'HV1'"], True),
    (
        "Workload",
        ("spec", "interfaces", 0, "name"),
        "eth 0",
        "spec.interfaces[0].name",
        ["'eth 0'", "1-15 characters"],
        True,
    ),
    (
        "Workload",
        ("spec", "interfaces", 0, "name"),
        "e" * 16,
        "spec.interfaces[0].name",
        ["1-15 characters"],
        True,
    ),
    # bad references
    (
        "Policy",
        ("spec", "rules", 1, "from", 0, "group"),
        "Web",
        "spec.rules[1].from[0].group",
        ["'Web'"],
        True,
    ),
    (
        "Policy",
        ("spec", "rules", 1, "from", 1, "workload"),
        "a/b/c",
        "spec.rules[1].from[1].workload",
        ["'a/b/c'", "TENANT/NAME"],
        True,
    ),
    ("Group", ("spec", "groups", 0), "acme/", "spec.groups[0]", ["bad name ''"], True),
    ("Group", ("spec", "members", 0), "Web-1", "spec.members[0]", ["'Web-1'"], True),
    (
        "Policy",
        ("spec", "rules", 0, "services", 0),
        "Https",
        "spec.rules[0].services[0]",
        ["'Https'"],
        True,
    ),
    # labels
    (
        "Workload",
        ("metadata", "labels", "hyperwall.io/name"),
        "x",
        "metadata.labels.hyperwall.io/name",
        ["reserved", "hyperwall.io/"],
        True,
    ),
    (
        "Workload",
        ("metadata", "labels", "hyperwall.io/tenant"),
        "globex",
        "metadata.labels.hyperwall.io/tenant",
        ["reserved"],
        True,
    ),
    (
        "Workload",
        ("metadata", "labels", "role"),
        "x" * 254,
        "metadata.labels.role",
        ["at most 253"],
        True,
    ),
    # CIDRs
    (
        "Group",
        ("spec", "cidrs", 0),
        "192.0.2.1/24",
        "spec.cidrs[0]",
        ["host bits set", "192.0.2.0/24"],
        True,
    ),
    (
        "Group",
        ("spec", "cidrs", 1),
        "2001:db8::1/32",
        "spec.cidrs[1]",
        ["host bits set", "2001:db8::/32"],
        True,
    ),
    (
        "Group",
        ("spec", "cidrs", 0),
        "10.0.0.0/33",
        "spec.cidrs[0]",
        ["bad CIDR '10.0.0.0/33'", "192.0.2.0/24"],
        True,
    ),
    ("Group", ("spec", "cidrs", 0), "office", "spec.cidrs[0]", ["bad CIDR 'office'"], True),
    ("Group", ("spec", "cidrs", 0), "300.0.0.0/8", "spec.cidrs[0]", ["bad CIDR"], True),
    (
        "Policy",
        ("spec", "rules", 0, "from", 1, "cidr"),
        "198.51.100.7/24",
        "spec.rules[0].from[1].cidr",
        ["host bits set", "198.51.100.0/24"],
        True,
    ),
    # IPs
    (
        "Workload",
        ("spec", "interfaces", 0, "ips", 0),
        "10.0.0.300",
        "spec.interfaces[0].ips[0]",
        ["'10.0.0.300'", "IPv4 or IPv6"],
        True,
    ),
    (
        "Workload",
        ("spec", "interfaces", 0, "ips", 1),
        "fd00::zz",
        "spec.interfaces[0].ips[1]",
        ["'fd00::zz'"],
        True,
    ),
    (
        "Workload",
        ("spec", "interfaces", 1, "ips", 0),
        "10.0.1.1/32",
        "spec.interfaces[1].ips[0]",
        ["without prefix"],
        True,
    ),
    (
        "Workload",
        ("spec", "interfaces", 0, "ips", 0),
        "",
        "spec.interfaces[0].ips[0]",
        ["bad IP address ''"],
        True,
    ),
    # MACs
    (
        "Workload",
        ("spec", "interfaces", 0, "mac"),
        "52:54:00",
        "spec.interfaces[0].mac",
        ["'52:54:00'", "six hex pairs"],
        True,
    ),
    (
        "Workload",
        ("spec", "interfaces", 0, "mac"),
        "52-54-00-00-00-01",
        "spec.interfaces[0].mac",
        ["six hex pairs"],
        True,
    ),
    (
        "Workload",
        ("spec", "interfaces", 0, "mac"),
        "52:54:00:00:00:0g",
        "spec.interfaces[0].mac",
        ["six hex pairs"],
        True,
    ),
    (
        "Workload",
        ("spec", "interfaces", 1, "mac"),
        "52:54:00:00:00:01:02",
        "spec.interfaces[1].mac",
        ["six hex pairs"],
        True,
    ),
    (
        "Workload",
        ("spec", "interfaces", 0, "mac"),
        "01:00:5e:00:00:01",
        "spec.interfaces[0].mac",
        ["multicast", "unicast"],
        True,
    ),
    (
        "Workload",
        ("spec", "interfaces", 0, "mac"),
        "33:33:00:00:00:01",
        "spec.interfaces[0].mac",
        ["multicast"],
        True,
    ),
    (
        "Workload",
        ("spec", "interfaces", 0, "mac"),
        "ff:ff:ff:ff:ff:ff",
        "spec.interfaces[0].mac",
        ["multicast"],
        True,
    ),
    # ports, in a Service and inline in a rule
    ("Service", ("spec", "ports", 0), "tcp/0", "spec.ports[0]", ["tcp/0", "1-65535"], True),
    ("Service", ("spec", "ports", 1), "tcp/70000", "spec.ports[1]", ["70000", "1-65535"], True),
    ("Service", ("spec", "ports", 0), "tcp/10-5", "spec.ports[0]", ["tcp/10-5", "LOW-HIGH"], True),
    ("Service", ("spec", "ports", 0), "foo/1", "spec.ports[0]", ["'foo'", "tcp, udp"], True),
    ("Service", ("spec", "ports", 0), "icmp/bogus", "spec.ports[0]", ["'bogus'", "0-255"], True),
    ("Service", ("spec", "ports", 0), "https", "spec.ports[0]", ["'https'"], True),
    ("Service", ("spec", "ports", 0), 443, "spec.ports[0]", ["a string"], True),
    ("Service", ("spec", "ports"), [], "spec.ports", ["empty", "at least one"], True),
    (
        "Policy",
        ("spec", "rules", 0, "services", 1),
        "tcp/0",
        "spec.rules[0].services[1]",
        ["1-65535"],
        True,
    ),
    (
        "Policy",
        ("spec", "rules", 0, "services", 1),
        "tcp/10-5",
        "spec.rules[0].services[1]",
        ["LOW-HIGH"],
        True,
    ),
    (
        "Policy",
        ("spec", "rules", 0, "services", 1),
        "foo/1",
        "spec.rules[0].services[1]",
        ["'foo'"],
        True,
    ),
    (
        "Policy",
        ("spec", "rules", 0, "services", 0),
        "icmp/bogus",
        "spec.rules[0].services[0]",
        ["'bogus'"],
        True,
    ),
    # selectors: syntax errors name the position
    (
        "Group",
        ("spec", "selector"),
        "role == web",
        "spec.selector",
        ["position 8", "a quoted string", "'web'"],
        True,
    ),
    (
        "Group",
        ("spec", "selector"),
        '(role == "web"',
        "spec.selector",
        ["position 14", "')'", "end of selector"],
        True,
    ),
    (
        "Group",
        ("spec", "selector"),
        "env in {}",
        "spec.selector",
        ["position 8", "a quoted string"],
        True,
    ),
    ("Group", ("spec", "selector"), "", "spec.selector", ["position 0"], True),
    (
        "Policy",
        ("spec", "appliedTo", "selector"),
        'app = "shop"',
        "spec.appliedTo.selector",
        ["position 4"],
        True,
    ),
    (
        "Policy",
        ("spec", "rules", 1, "to", 0, "selector"),
        'role == "db" &&',
        "spec.rules[1].to[0].selector",
        ["position 15"],
        True,
    ),
    # peers and appliedTo: exactly one key
    (
        "Policy",
        ("spec", "rules", 1, "from", 0),
        {"group": "web", "cidr": "10.0.0.0/8"},
        "spec.rules[1].from[0]",
        ["exactly one of group, workload, selector, cidr", "got group, cidr"],
        True,
    ),
    (
        "Policy",
        ("spec", "rules", 0, "to", 0),
        {},
        "spec.rules[0].to[0]",
        ["exactly one of", "got none"],
        True,
    ),
    (
        "Policy",
        ("spec", "appliedTo"),
        {},
        "spec.appliedTo",
        ["exactly one of selector, group, workload", "got none"],
        True,
    ),
    (
        "Policy",
        ("spec", "appliedTo"),
        {"group": "a", "workload": "b"},
        "spec.appliedTo",
        ["exactly one of", "got group, workload"],
        True,
    ),
    (
        "Policy",
        ("spec", "appliedTo"),
        {"cidr": "10.0.0.0/8"},
        "spec.appliedTo.cidr",
        ["unknown field"],
        False,
    ),
    # rules only a whole document can break
    ("Tenant", ("metadata", "tenant"), "acme", "metadata.tenant", ["a Tenant has no tenant"], True),
    ("Service", ("metadata", "name"), "tcp", "metadata.name", ["'tcp'", "keyword"], False),
    ("Service", ("metadata", "name"), "any", "metadata.name", ["'any'", "keyword"], False),
    ("Service", ("metadata", "name"), "icmpv6", "metadata.name", ["'icmpv6'", "keyword"], False),
    (
        "Policy",
        ("spec", "rules", 1, "name"),
        "lb-to-web",
        "spec.rules[1].name",
        ["duplicate rule name 'lb-to-web'"],
        False,
    ),
    (
        "Workload",
        ("spec", "interfaces", 1, "name"),
        "eth0",
        "spec.interfaces[1].name",
        ["duplicate interface name"],
        False,
    ),
    ("Workload", ("spec", "interfaces"), [], "spec.interfaces", ["empty", "at least one"], True),
]


@pytest.mark.parametrize(
    ("kind", "parts", "value", "path", "fragments", "needs_expected"),
    CASES,
    ids=[f"{c[0]}:{c[3]}={'<deleted>' if c[2] is DELETE else repr(c[2])}"[:70] for c in CASES],
)
def test_one_problem_one_issue(
    kind: str,
    parts: tuple[str | int, ...],
    value: object,
    path: str,
    fragments: list[str],
    needs_expected: bool,
) -> None:
    issue = only_issue(mutate(DOCS[kind], parts, value))
    assert issue.path == path
    for fragment in fragments:
        assert fragment in text_of(issue), str(issue)
    if needs_expected:
        assert says_expected(issue), str(issue)


def test_document_that_is_not_a_mapping() -> None:
    for raw in (["a", "b"], "kind: Tenant", 42):
        issue = only_issue(raw)
        assert issue.path == ""
        assert "not a mapping" in issue.message
        assert issue.expected


# --- every problem of a document at once -------------------------------------------------


def test_every_shape_problem_of_one_document_is_reported() -> None:
    raw = copy.deepcopy(POLICY)
    raw["metadata"]["name"] = "Shop"
    raw["spec"]["tier"] = "app"
    raw["spec"]["priority"] = "high"
    raw["spec"]["appliedTo"] = {}
    raw["spec"]["rules"][0]["from"][1] = {"cidr": "198.51.100.7/24"}
    raw["spec"]["rules"][0]["services"] = ["tcp/0", "https", "foo/1"]
    raw["spec"]["rules"][1]["action"] = "deny"
    raw["spec"]["rules"][1]["to"][0]["selector"] = "role == db"
    raw["spec"]["rules"][1]["colour"] = "red"
    raw["spec"]["rules"].append({"name": "third"})
    issues = issues_of(raw)
    assert {i.path for i in issues} == {
        "metadata.name",
        "spec.tier",
        "spec.priority",
        "spec.appliedTo",
        "spec.rules[0].from[1].cidr",
        "spec.rules[0].services[0]",
        "spec.rules[0].services[2]",
        "spec.rules[1].action",
        "spec.rules[1].to[0].selector",
        "spec.rules[1].colour",
        "spec.rules[2].action",
    }
    assert len(issues) == 11
    assert all(i.source == SOURCE for i in issues)


def test_every_document_rule_problem_is_reported() -> None:
    raw = copy.deepcopy(WORKLOAD)
    raw["metadata"]["labels"] = {"hyperwall.io/name": "x", "hyperwall.io/host": "y", "ok": "z"}
    raw["spec"]["interfaces"][1]["name"] = "eth0"
    issues = issues_of(raw)
    assert sorted(i.path for i in issues) == [
        "metadata.labels.hyperwall.io/host",
        "metadata.labels.hyperwall.io/name",
        "spec.interfaces[1].name",
    ]


def test_shape_and_document_rule_problems_are_reported_together() -> None:
    raw = copy.deepcopy(POLICY)
    raw["spec"]["tier"] = "app"  # a shape problem
    raw["spec"]["rules"][1]["name"] = "lb-to-web"  # a duplicate rule name
    assert {i.path for i in issues_of(raw)} == {"spec.tier", "spec.rules[1].name"}


# --- fixed bugs (regression tests) ------------------------------------------------------


def test_python_field_name_from_underscore_is_an_unknown_field() -> None:
    raw = copy.deepcopy(POLICY)
    rule = raw["spec"]["rules"][0]
    rule["from_"] = rule.pop("from")
    issue = only_issue(raw)
    assert issue.path == "spec.rules[0].from_"
    assert "unknown field" in issue.message


def test_bad_label_key_is_reported_under_metadata_labels() -> None:
    issue = only_issue(mutate(WORKLOAD, ("metadata", "labels", "bad key"), "x"))
    assert issue.path.startswith("metadata.labels.bad key")
    assert "'bad key'" in issue.message
    assert "[A-Za-z0-9_./-]+" in text_of(issue)


def test_bad_label_key_path_is_a_field_path() -> None:
    issue = only_issue(mutate(WORKLOAD, ("metadata", "labels", "bad key"), "x"))
    assert issue.path == "metadata.labels.bad key"


@pytest.mark.parametrize(
    ("kind", "parts", "value"),
    [
        ("Service", ("metadata", "name"), "tcp"),
        ("Policy", ("spec", "rules", 1, "name"), "lb-to-web"),
        ("Workload", ("spec", "interfaces", 1, "name"), "eth0"),
    ],
    ids=["keyword-service-name", "duplicate-rule-name", "duplicate-interface-name"],
)
def test_document_rule_issues_say_what_was_expected(
    kind: str, parts: tuple[str | int, ...], value: object
) -> None:
    assert says_expected(only_issue(mutate(DOCS[kind], parts, value)))


# --- issues ------------------------------------------------------------------------------


def test_issue_text_names_file_document_path_message_and_expectation() -> None:
    issue = only_issue(mutate(POLICY, ("spec", "rules", 1, "from", 0, "group"), "Web"))
    text = str(issue)
    assert text.startswith("docs/acme.yaml document 7: spec.rules[1].from[0].group: ")
    assert "'Web'" in text
    assert issue.to_json() == {
        "file": "docs/acme.yaml",
        "document": 7,
        "path": "spec.rules[1].from[0].group",
        "message": issue.message,
        "expected": issue.expected,
    }


def test_issue_without_path_or_expectation() -> None:
    issue = Issue(Source("a.yaml", 2), "", "document is empty")
    assert str(issue) == "a.yaml document 2: document is empty"
    assert str(Issue(Source("a.yaml", 2), "spec", "bad", "good")) == (
        "a.yaml document 2: spec: bad (expected good)"
    )


def test_documents_invalid_sorts_and_keeps_every_issue() -> None:
    issues = [
        Issue(Source("b.yaml", 1), "spec", "x"),
        Issue(Source("a.yaml", 3), "metadata.name", "y"),
        Issue(Source("a.yaml", 1), "kind", "z"),
    ]
    error = DocumentsInvalid(issues)
    assert [(i.source.file, i.source.document) for i in error.issues] == [
        ("a.yaml", 1),
        ("a.yaml", 3),
        ("b.yaml", 1),
    ]
    assert str(error).splitlines() == [str(i) for i in error.issues]


def test_join_path() -> None:
    assert join_path("spec", "rules", 1, "from", 0, "group") == "spec.rules[1].from[0].group"
    assert join_path() == ""
    assert join_path("metadata") == "metadata"


def test_parsed_kinds() -> None:
    for kind, model in (
        ("Tenant", TenantDoc),
        ("Workload", WorkloadDoc),
        ("Group", GroupDoc),
        ("Service", ServiceDoc),
        ("Policy", PolicyDoc),
    ):
        doc, _ = parse_document(copy.deepcopy(DOCS[kind]), SOURCE)
        assert isinstance(doc, model)
