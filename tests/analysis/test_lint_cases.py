"""`hyperwall.analysis.lint_cases`: the distinct cases equal those of deciding every
enforcement point and every class one by one (the per-point sweep `decisions.segments`
and the port classes of `classes.split`), on random fleets."""

from __future__ import annotations

from typing import Literal

from hypothesis import HealthCheck, given, settings

from hyperwall.analysis.classes import cut_points, split
from hyperwall.analysis.decisions import (
    FULL,
    PACKET_SPACE,
    as_boxes,
    endpoint_boxes,
    port_matches,
    segments,
)
from hyperwall.analysis.lint_cases import Act, Case, packet_cases
from hyperwall.analysis.view import FleetView
from hyperwall.compiler.intervals import address_interval
from tests.fleetgen import Doc, fleets, load


def cases_point_by_point(view: FleetView) -> set[Case]:
    out: set[Case] = set()
    for wk in view.catalog.workloads:
        for ep in view.compiler.endpoints(wk):
            for ip in ep.ips:
                family, (own, _) = address_interval(ip)
                directions: tuple[Literal["in", "out"], ...] = ("in", "out")
                for direction in directions:
                    boxes = as_boxes(
                        endpoint_boxes(
                            ep,
                            direction,
                            own,
                            lambda name, d=direction, f=family: view.chain_boxes(name, d, f),  # type: ignore[misc]
                        )
                    )
                    for _, inside in segments(boxes, FULL[family]):
                        sub = [b for i, b in enumerate(boxes) if inside >> i & 1]
                        for proto, ranges in PACKET_SPACE[family].items():
                            pcuts = cut_points(
                                [(lo, hi)]
                                for b in sub
                                if b.ports
                                for p, lo, hi in b.ports
                                if p == proto
                            )
                            for ports in split(ranges, pcuts):
                                matching = tuple(
                                    Act(b.tier, b.action, b.rule)
                                    for b in sub
                                    if port_matches(b.ports, proto, ports[0])
                                )
                                if matching:
                                    out.add((ep.default, matching))
    return out


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(fleet=fleets())
def test_cases_equal_those_of_every_point_and_class(fleet: list[Doc]) -> None:
    view = FleetView(load(fleet))
    found = {(default, matching) for default, matching in packet_cases(view) if matching}
    assert found == cases_point_by_point(view)
