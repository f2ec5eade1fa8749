"""The assertion checker (`hyperwall.analysis.assertions`): against brute force over the
reference evaluator on small random fleets, and on worked examples."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hyperwall.analysis.assertions import AssertionResult, check_assertions, touched_assertions
from hyperwall.analysis.trace import trace
from hyperwall.policy.model import Catalog
from tests.analysis.assertion_gen import assertion_docs, brute_force
from tests.fleetgen import Doc, doc, edited_workloads, fleets, load
from tests.test_oracle import Oracle


def _check_counterexample(
    docs: Sequence[Doc], catalog: Catalog, a: Doc, r: AssertionResult
) -> None:
    """A counterexample lies inside the assertion and `trace` shows the wrong verdict."""
    cx = r.counterexample
    assert cx is not None
    oracle = Oracle(docs)
    owner, spec = a["metadata"].get("tenant"), a["spec"]
    src, dst = ipaddress.ip_address(cx.source), ipaddress.ip_address(cx.destination)
    assert src != dst and src.version == dst.version
    assert oracle.address_in(owner, spec.get("from", []), src)
    assert oracle.address_in(owner, spec.get("to", []), dst)
    proto, _, port = cx.service.partition("/")
    assert oracle.services_match(owner, spec.get("services"), proto, int(port))
    replay = trace(catalog, cx.source, cx.destination, cx.service)
    assert replay.to_json() == cx.trace.to_json()
    assert (replay.verdict == "allow") != (spec["expect"] == "allow")


@pytest.mark.slow
@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), fleet=fleets())
def test_checker_agrees_with_brute_force(data: st.DataObject, fleet: list[Doc]) -> None:
    assertions = data.draw(assertion_docs(fleet), label="assertions")
    docs = [*fleet, *assertions]
    catalog = load(docs)
    results = check_assertions(catalog)
    assert [r.name for r in results] == list(catalog.config.assertions)
    for a, r in zip(assertions, results, strict=True):
        assert r.holds == brute_force(fleet, catalog, a), (a, r)
        event(f"expect {r.expect}, holds {r.holds}")
        if not r.holds:
            _check_counterexample(fleet, catalog, a, r)


# -- incremental: untouched assertions keep their result -------------------------------


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), fleet=fleets())
def test_untouched_assertions_keep_their_result(data: st.DataObject, fleet: list[Doc]) -> None:
    docs = [*fleet, *data.draw(assertion_docs(fleet), label="assertions")]
    old = load(docs)
    new_catalog = Catalog(old.config, edited_workloads(data, dict(old.workloads)))
    touched = touched_assertions(old, new_catalog)
    before = {r.name: r.to_json() for r in check_assertions(old)}
    after = {r.name: r.to_json() for r in check_assertions(new_catalog)}
    event(f"touched {len(touched)} of {len(before)}")
    for name in before.keys() - touched:
        assert before[name] == after[name], name
    assert check_assertions(new_catalog, names=touched) == [
        r for r in check_assertions(new_catalog) if r.name in touched
    ]


def test_other_kinds_touch_every_assertion_and_an_edited_assertion_itself() -> None:
    old = load(SHOP)
    edited = [dict(d) for d in SHOP]
    edited[-1] = {**edited[-1], "spec": {**edited[-1]["spec"], "expect": "deny"}}
    assert touched_assertions(old, load(edited)) == {"acme/db-only-from-app"}
    relaxed = [*SHOP[:-1], tenant_doc("acme", "allow"), SHOP[-1]]
    relaxed = [d for d in relaxed if d is not SHOP[0]]
    assert touched_assertions(old, load(relaxed)) == set(old.config.assertions)


# -- worked examples -------------------------------------------------------------------


def tenant_doc(name: str, default: str = "drop") -> Doc:
    return doc("Tenant", name, spec={"defaultAction": default})


def vm(name: str, ip: str, mac: int, **labels: str) -> Doc:
    iface = {"name": "eth0", "mac": f"52:54:00:00:00:{mac:02x}", "ips": [ip]}
    return doc("Workload", name, "acme", spec={"host": "hv1", "interfaces": [iface]}, labels=labels)


def assertion(
    name: str, tenant: str | None = "acme", src: list[Doc] | None = None, **spec: object
) -> Doc:
    """An Assertion document; `src` is its `from`."""
    if src is not None:
        spec["from"] = src
    return doc("Assertion", name, tenant, spec=spec)


SHOP: list[Doc] = [
    tenant_doc("acme"),
    vm("web-1", "10.1.0.11", 1, role="web"),
    vm("app-1", "10.1.0.21", 2, role="app"),
    vm("db-1", "10.1.0.41", 3, role="db", pci="true"),
    doc("Group", "app", "acme", spec={"selector": 'role == "app"'}),
    doc("Group", "pci", "acme", spec={"selector": 'pci == "true"'}),
    doc(
        "Policy",
        "shop",
        "acme",
        spec={
            "rules": [
                {
                    "name": "app-to-db",
                    "action": "allow",
                    "from": [{"group": "app"}],
                    "to": [{"group": "pci"}],
                    "services": ["tcp/5432"],
                },
                {
                    "name": "web-out",
                    "action": "allow",
                    "direction": "out",
                    "from": [{"selector": 'role == "web"'}],
                    "to": [{"cidr": "10.9.0.0/29"}],
                },
            ]
        },
    ),
    assertion(
        "db-only-from-app",
        src=[{"group": "app"}],
        to=[{"group": "pci"}],
        services=["tcp/5432"],
        expect="allow",
    ),
]


def results(*extra: Doc) -> dict[str, AssertionResult]:
    return {r.name: r for r in check_assertions(load([*SHOP, *extra]))}


def test_the_contract_example_holds_with_its_deciding_rule() -> None:
    r = results()["acme/db-only-from-app"]
    assert r.holds and r.counterexample is None
    assert r.evidence == ("acme/shop/app-to-db",)
    assert r.to_json() == {"name": "acme/db-only-from-app", "holds": True, "counterexample": None}


def test_deny_fails_with_the_allowed_case_and_its_trace() -> None:
    r = results(assertion("nothing-to-db", to=[{"group": "pci"}], expect="deny"))[
        "acme/nothing-to-db"
    ]
    assert not r.holds and r.counterexample is not None
    assert r.to_json()["counterexample"] == {
        "from": "10.1.0.21",
        "to": "10.1.0.41",
        "service": "tcp/5432",
        "trace": {
            "verdict": "allow",
            "egress": {"verdict": "allow", "rule": "acme/shop/app-to-db"},
            "ingress": {"verdict": "allow", "rule": "acme/shop/app-to-db"},
        },
    }


def test_web_cannot_reach_db_holds_on_every_port_with_the_default_as_evidence() -> None:
    r = results(
        assertion(
            "web-not-db",
            src=[{"workload": "web-1"}],
            to=[{"workload": "db-1"}],
            expect="deny",
        )
    )["acme/web-not-db"]
    assert r.holds and r.evidence == ("default",)


def test_the_first_address_past_a_cidr_is_the_counterexample() -> None:
    inside = assertion(
        "web-out-inside",
        src=[{"workload": "web-1"}],
        to=[{"cidr": "10.9.0.0/29"}],
        expect="allow",
    )
    wider = assertion(
        "web-out-wider",
        src=[{"workload": "web-1"}],
        to=[{"cidr": "10.9.0.0/28"}],
        expect="allow",
    )
    found = results(inside, wider)
    assert found["acme/web-out-inside"].holds
    cx = found["acme/web-out-wider"].counterexample
    assert cx is not None and (cx.source, cx.destination, cx.service) == (
        "10.1.0.11",
        "10.9.0.8",
        "tcp/1",
    )


def test_nothing_filters_external_to_external() -> None:
    r = results(
        assertion(
            "ext",
            None,
            src=[{"cidr": "192.0.2.0/24"}],
            to=[{"cidr": "198.51.100.0/24"}],
            expect="deny",
        )
    )["ext"]
    assert r.counterexample is not None
    assert r.counterexample.to_json() == {
        "from": "192.0.2.0",
        "to": "198.51.100.0",
        "service": "tcp/1",
        "trace": {"verdict": "allow", "egress": None, "ingress": None},
    }


def test_no_case_no_failure_same_end_and_other_family() -> None:
    same = assertion("same", src=[{"workload": "db-1"}], to=[{"workload": "db-1"}], expect="allow")
    v6 = assertion("v6", src=[{"workload": "db-1"}], to=[{"cidr": "fd00::/64"}], expect="allow")
    icmp6 = assertion(
        "icmp6",
        src=[{"workload": "db-1"}],
        to=[{"cidr": "10.0.0.0/8"}],
        services=["icmpv6"],
        expect="allow",
    )
    found = results(same, v6, icmp6)
    assert all(found[f"acme/{n}"].holds for n in ("same", "v6", "icmp6"))


def test_names_pick_a_subset_in_document_order() -> None:
    extra = assertion("a-second", to=[{"group": "pci"}], expect="deny")
    catalog = load([*SHOP, extra])
    picked = check_assertions(catalog, names={"acme/a-second", "acme/db-only-from-app", "nope"})
    assert [r.name for r in picked] == ["acme/db-only-from-app", "acme/a-second"]
