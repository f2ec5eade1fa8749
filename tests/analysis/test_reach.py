"""Reachability (`hyperwall.analysis.reach`): against brute force over the reference
evaluator on small random fleets, and on the shop example; compression and diffs."""

from __future__ import annotations

import ipaddress
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperwall.analysis.reach import (
    ReachMatrix,
    Side,
    compress,
    group_sides,
    reach,
    reach_diff,
    resolve_peer,
    workload_sides,
)
from hyperwall.analysis.view import FleetView
from hyperwall.compiler.intervals import contains
from hyperwall.policy.ports import PROTO_NUMBERS, parse_port_spec
from tests.analysis.assertion_gen import Verdicts, address_points, port_points
from tests.analysis.test_assertions import SHOP, tenant_doc, vm
from tests.fleetgen import Doc, doc, fleets, load, sample

RESTRICTIONS = (None, ("tcp/79-81", "udp/53", "icmp/echo-request", "icmpv6/128"), ("tcp/22-80",))


def brute_matrix(
    docs: list[Doc], view: FleetView, sides: list[Side], services: tuple[str, ...] | None
) -> dict[tuple[str, str], tuple[set[tuple[str, int]], set[str]]]:
    """(row, column) -> (the enumerated (protocol, port) cases allowed, the deciding rules)."""
    verdicts = Verdicts(view.catalog)
    wanted = None if services is None else [parse_port_spec(s) for s in services]
    out: dict[tuple[str, str], tuple[set[tuple[str, int]], set[str]]] = defaultdict(
        lambda: (set(), set())
    )
    for i, family in enumerate((4, 6)):
        points = [int(ipaddress.ip_address(a)) for a in address_points(docs, family)]
        ports = [
            (p, port)
            for p, port in port_points([*docs, {"ports": list(services or ())}], family)
            if wanted is None or any(w.proto == p and w.low <= port <= w.high for w in wanted)
        ]
        member = {s.label: [a for a in points if contains(s.addresses[i], a)] for s in sides}
        make = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
        for r in sides:
            for c in sides:
                for s in member[r.label]:
                    for d in member[c.label]:
                        if s == d:
                            continue
                        for proto, port in ports:
                            ends = verdicts.ends(str(make(s)), str(make(d)), proto, port)
                            if all(e is None or e.verdict == "allow" for e in ends):
                                cases, rules = out[(r.label, c.label)]
                                cases.add((proto, port))
                                rules.update(e.rule for e in ends if e is not None)
    return out


def allowed(matrix: ReachMatrix, row: str, column: str, proto: str, port: int) -> bool:
    ports, _ = matrix.cells.get((row, column), ({}, ()))
    return any(low <= port <= high for low, high in ports.get(PROTO_NUMBERS[proto], ()))


@pytest.mark.slow
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), fleet=fleets())
def test_reach_agrees_with_brute_force(data: st.DataObject, fleet: list[Doc]) -> None:
    catalog = load(fleet)
    view = FleetView(catalog)
    sides = group_sides(view, None)[:4] + workload_sides(view, None)[:3]
    services = data.draw(sample(RESTRICTIONS), label="services")
    ports = None if services is None else tuple(parse_port_spec(s) for s in services)
    matrix = reach(view, sides, sides, ports)
    expected = brute_matrix(fleet, view, sides, services)
    points = {
        point
        for family in (4, 6)
        for point in port_points([*fleet, {"ports": list(services or ())}], family)
    }
    for key in expected.keys() | matrix.cells.keys():
        cases, rules = expected.get(key, (set(), set()))
        for proto, port in points:
            assert allowed(matrix, *key, proto, port) == ((proto, port) in cases), (
                key,
                proto,
                port,
            )
        assert set(matrix.cells[key][1]) == rules, key


# -- the shop ----------------------------------------------------------------------------


def shop_matrix(*extra: Doc, services: tuple[str, ...] | None = None) -> ReachMatrix:
    view = FleetView(load([*SHOP, *extra]))
    sides = group_sides(view, "acme") + workload_sides(view, "acme")
    ports = None if services is None else tuple(parse_port_spec(s) for s in services)
    return reach(view, sides, sides, ports)


def test_the_shop_matrix_names_services_and_rules() -> None:
    m = shop_matrix()
    assert m.to_json()["reach"] == [
        {
            "from": "acme/app",
            "to": "acme/pci",
            "services": ["tcp/5432"],
            "rules": ["acme/shop/app-to-db"],
        },
        {
            "from": "acme/app",
            "to": "acme/db-1",
            "services": ["tcp/5432"],
            "rules": ["acme/shop/app-to-db"],
        },
        {
            "from": "acme/app-1",
            "to": "acme/pci",
            "services": ["tcp/5432"],
            "rules": ["acme/shop/app-to-db"],
        },
        {
            "from": "acme/app-1",
            "to": "acme/db-1",
            "services": ["tcp/5432"],
            "rules": ["acme/shop/app-to-db"],
        },
    ]


def test_compression_merges_adjacent_ranges_and_names_full_protocols() -> None:
    assert compress({6: ((8080, 8090),), 17: ((53, 53),), 1: ((8, 8),)}) == [
        "icmp/echo-request",
        "tcp/8080-8090",
        "udp/53",
    ]
    assert compress({6: ((1, 65535),)}) == ["tcp"]
    assert compress({6: ((1, 65535),), 17: ((1, 65535),), 132: ((1, 65535),), 1: ((0, 255),)}) == [
        "any"
    ]


def test_a_change_shows_what_it_opens_and_closes() -> None:
    before = shop_matrix()
    opened = doc(
        "Policy",
        "more",
        "acme",
        spec={
            "rules": [
                {
                    "name": "app-to-db-8080-8090",
                    "action": "allow",
                    "from": [{"group": "app"}],
                    "to": [{"group": "pci"}],
                    "services": ["tcp/8080-8090", "tcp/5432"],
                }
            ]
        },
    )
    after = shop_matrix(opened)
    changes = [c.to_json() for c in reach_diff(before, after) if c.source == "acme/app"]
    assert changes == [  # in the matrix's order: groups, then workloads
        {"from": "acme/app", "to": "acme/pci", "opened": ["tcp/8080-8090"], "closed": []},
        {"from": "acme/app", "to": "acme/db-1", "opened": ["tcp/8080-8090"], "closed": []},
    ]
    back = [c.to_json() for c in reach_diff(after, before) if c.source == "acme/app"]
    assert back[0]["closed"] == ["tcp/8080-8090"] and back[0]["opened"] == []


def test_external_to_external_reaches_on_everything_without_rules() -> None:
    view = FleetView(load([tenant_doc("acme"), vm("a-1", "10.1.0.1", 1)]))
    office = Side("office", (((3221225984, 3221226239),), ()))  # 192.0.2.0/24
    m = reach(view, [office], [office])
    assert m.to_json()["reach"] == [
        {"from": "office", "to": "office", "services": ["any"], "rules": []}
    ]


def test_peers_resolve_by_kind_and_name() -> None:
    catalog = load(SHOP)
    assert resolve_peer(catalog, "app", "acme").value == "acme/app"
    assert resolve_peer(catalog, "workload:db-1", "acme").value == "acme/db-1"
    assert resolve_peer(catalog, "cidr:10.0.0.0/8", None).kind == "cidr"
    with pytest.raises(ValueError, match="no group or workload 'nope'"):
        resolve_peer(catalog, "nope", "acme")
    with pytest.raises(ValueError, match="unknown peer kind"):
        resolve_peer(catalog, "host:x", "acme")
