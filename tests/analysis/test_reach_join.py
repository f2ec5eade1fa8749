"""The reach join (`hyperwall.analysis.reach_join`): the port-overlap sweep against brute
force, the row accumulator, receivers to columns, and the products' diagonal on a small
fleet (the whole matrix is checked against the reference evaluator in `test_reach.py`)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hyperwall.analysis.masks import AddressBits, Piece
from hyperwall.analysis.reach import group_sides, reach, workload_sides
from hyperwall.analysis.reach_join import Found, Sides, _Ingress, _overlapping
from hyperwall.analysis.view import FleetView
from tests.analysis.test_assertions import tenant_doc, vm
from tests.fleetgen import doc, load

ranges = st.tuples(st.integers(1, 30), st.integers(0, 6)).map(lambda t: (t[0], t[0] + t[1]))


@settings(max_examples=200, deadline=None)
@given(g_ranges=st.lists(ranges, max_size=8), h_ranges=st.lists(ranges, max_size=8))
def test_the_sweep_yields_exactly_the_overlapping_pairs(
    g_ranges: list[tuple[int, int]], h_ranges: list[tuple[int, int]]
) -> None:
    gs = sorted(
        (Piece(6, low, high, f"g{i}", 1) for i, (low, high) in enumerate(g_ranges)),
        key=lambda p: p.low,
    )
    hs = sorted(
        ((_Ingress(6, low, high, f"h{i}"), 1) for i, (low, high) in enumerate(h_ranges)),
        key=lambda h: h[0].low,
    )
    found = sorted((g.rule, h.rule) for g, h, _ in _overlapping(gs, hs))
    expected = sorted(
        (g.rule, h.rule) for g in gs for h, _ in hs if max(g.low, h.low) <= min(g.high, h.high)
    )
    assert found == expected


def test_found_ors_columns_into_every_row_and_skips_nothing_reached() -> None:
    found = Found.empty(3)
    found.add((0, 2), 0b101, (6, 80, 80), ("r1", ""))
    found.add((2,), 0b010, None, ("r2",))
    found.add((1,), 0, (6, 1, 2), ("r3",))
    assert found.ports[0] == {(6, 80, 80): 0b101} and found.ports[1] == {}
    assert found.rules[2] == {"r1": 0b101, "r2": 0b010}
    assert found.rules[1] == {}


def test_receivers_become_the_columns_they_are_in() -> None:
    bits = AddressBits([10, 20, 30])
    columns = Sides({10: [0, 2], 30: [1]}, bits)
    assert columns.of(0b001) == 0b101
    assert columns.of(0b101) == 0b111
    assert columns.of(0) == 0


def test_a_sender_alone_does_not_reach_itself_but_reaches_its_peers_in_its_group() -> None:
    web = {"selector": 'role == "web"'}
    fleet = [
        tenant_doc("acme"),
        vm("w-1", "10.1.0.1", 1, role="web"),
        vm("w-2", "10.1.0.2", 2, role="web"),
        vm("solo", "10.1.0.3", 3, role="solo"),
        doc("Group", "web", "acme", spec={"selector": 'role == "web"'}),
        doc("Group", "solo", "acme", spec={"selector": 'role == "solo"'}),
        doc(
            "Policy",
            "p",
            "acme",
            spec={
                "rules": [
                    {"name": "web", "action": "allow", "from": [web], "to": [web]},
                    {
                        "name": "solo",
                        "action": "allow",
                        "from": [{"group": "solo"}],
                        "to": [{"group": "solo"}],
                        "services": ["tcp/22"],
                    },
                ]
            },
        ),
    ]
    view = FleetView(load(fleet))
    sides = group_sides(view, "acme") + workload_sides(view, "acme")
    m = reach(view, sides, sides)
    assert sorted(m.cells) == [
        ("acme/w-1", "acme/w-2"),
        ("acme/w-1", "acme/web"),
        ("acme/w-2", "acme/w-1"),
        ("acme/w-2", "acme/web"),
        ("acme/web", "acme/w-1"),
        ("acme/web", "acme/w-2"),
        ("acme/web", "acme/web"),
    ]
    assert m.cells[("acme/web", "acme/web")] == (
        {6: ((1, 65535),), 17: ((1, 65535),), 132: ((1, 65535),), 1: ((0, 255),)},
        ("acme/p/web",),
    )
