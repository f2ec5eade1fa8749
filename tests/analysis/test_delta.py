"""`analysis.delta`: re-checking an assertion that held, on the cases of the changed
addresses only, gives the full check's answer after any Workloads-only change; a change
that breaks one is found and its counterexample is what `trace` says."""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import replace
from typing import Literal

from hypothesis import HealthCheck, event, given, settings, target
from hypothesis import strategies as st

from hyperwall.analysis.assertions import Checker, check_assertions
from hyperwall.analysis.delta import Rechecker, changed_addresses
from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.policy.model import AssertionDef, Catalog, Peer
from hyperwall.policy.ports import PortMatch, parse_port_spec
from tests.analysis.assertion_gen import SERVICE_SPECS, assertion_docs
from tests.analysis.test_assertions import SHOP, assertion, vm
from tests.fleetgen import Doc, edited_workloads, fleets, load, sample


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), fleet=fleets())
def test_recheck_of_what_held_agrees_with_a_full_check_after_workload_edits(
    data: st.DataObject, fleet: list[Doc]
) -> None:
    """Both ways: the edits from the drawn fleet, and the same edits undone (an assertion
    that held after them is re-checked over the fleet before them)."""
    before = load([*fleet, *data.draw(assertion_docs(fleet), label="assertions")])
    workloads = edited_workloads(data, dict(before.workloads))
    after = Catalog(before.config, workloads)
    # and assertions about the edited workloads' addresses, the ones edits most often break
    about = changed_addresses(before, after)
    assert about is not None  # only workloads changed
    services = data.draw(st.lists(sample(SERVICE_SPECS), max_size=2, unique=True), "services")
    others = sorted(
        {ip for w in (*before.workloads.values(), *workloads.values()) for ip in w.ips()}
    )
    extra = _about(about, others, tuple(parse_port_spec(t) for t in services) or None)
    config = replace(before.config, assertions={**before.config.assertions, **extra})
    before, after = replace(before, config=config), replace(after, config=config)
    broken = 0
    for old, new in ((before, after), (after, before)):
        addresses = changed_addresses(old, new)
        assert addresses is not None  # only workloads changed
        checker = Checker(new, FleetCompiler(new.config, new.workloads.values()))
        quick = Rechecker(checker, addresses)  # shared by the assertions, as the gate does
        for held in (r.name for r in check_assertions(old) if r.holds):
            assertion = new.config.assertions[held]
            full = checker.check_one(assertion)
            found = quick.check(assertion)
            assert found.holds == full.holds, held
            if not found.holds:  # a case of a changed address, confirmed by `trace`
                broken += 1
                assert found.counterexample is not None
                ends = {found.counterexample.source, found.counterexample.destination}
                assert ends & {ip for f in addresses for ip in _texts(f, addresses[f])}
    target(float(broken))  # steer towards edits that break what held
    event("an edit broke an assertion" if broken else "nothing broke")


def _about(
    addresses: dict[int, tuple[int, ...]],
    others: list[str],
    services: tuple[PortMatch, ...] | None,
) -> dict[str, AssertionDef]:
    """Provider assertions from and to each address (as a /32 or /128), to and from any
    address and each of `others` (the workloads' addresses), both verdicts."""
    out: dict[str, AssertionDef] = {}
    for family, values in addresses.items():
        bits = 32 if family == 4 else 128
        ends = [()] + [
            (Peer("cidr", f"{ip}/{bits}"),)
            for ip in others
            if ipaddress.ip_address(ip).version == family
        ]
        for value in values:
            text = str(ipaddress.ip_address(value) if family == 4 else ipaddress.IPv6Address(value))
            cidr = (Peer("cidr", f"{text}/{bits}"),)
            expects: tuple[Literal["allow", "deny"], ...] = ("allow", "deny")
            for expect, (j, end) in itertools.product(expects, enumerate(ends)):
                for i, (src, dst) in enumerate(((cidr, end), (end, cidr))):
                    name = f"about-{value}-{expect}-{j}-{i}"
                    out[name] = AssertionDef(None, name, "", src, dst, services, expect)
    return out


def _texts(family: int, values: tuple[int, ...]) -> set[str]:
    return {
        str(ipaddress.ip_address(v) if family == 4 else ipaddress.IPv6Address(v)) for v in values
    }


def test_a_workload_moving_into_a_group_breaks_the_assertion_and_the_recheck_finds_it() -> None:
    """web-1 (a front-tier VM) becomes an app server: `app-to-db` now lets it reach the
    database, which the assertion forbids for the front tier; the recheck finds that case."""
    front = assertion(
        "front-never-to-db",
        src=[{"selector": 'tier == "front"'}],
        to=[{"group": "pci"}],
        expect="deny",
    )
    docs = [vm("web-1", "10.1.0.11", 1, role="web", tier="front"), *SHOP[2:], front]
    old = load([SHOP[0], *docs])
    assert all(r.holds for r in check_assertions(old))
    web = old.workloads["acme/web-1"]
    moved = replace(web, labels={**web.labels, "role": "app"})
    new = Catalog(old.config, {**old.workloads, web.key: moved})
    addresses = changed_addresses(old, new)
    assert addresses == {4: (int(ipaddress.IPv4Address("10.1.0.11")),), 6: ()}
    checker = Checker(new)
    quick = Rechecker(checker, addresses)
    found = quick.check(new.config.assertions["acme/front-never-to-db"])
    assert not found.holds and found.counterexample is not None
    case = found.counterexample
    assert (case.source, case.destination, case.service) == ("10.1.0.11", "10.1.0.41", "tcp/5432")
    assert case.trace.verdict == "allow"
    # the assertion about app to db still holds: web-1 joined `app`, and db allows it
    assert quick.check(new.config.assertions["acme/db-only-from-app"]).holds


def test_a_policy_change_is_no_workloads_only_change() -> None:
    old = load(SHOP)
    policy = next(d for d in SHOP if d["kind"] == "Policy")
    narrowed = {**policy, "spec": {"rules": policy["spec"]["rules"][:1]}}
    assert changed_addresses(old, load([d if d is not policy else narrowed for d in SHOP])) is None
