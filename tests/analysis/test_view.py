"""`analysis.view`'s caches kept with a compiler: after workload edits applied to the same
`FleetCompiler` (as the manager's gate does), checking with the warm caches gives exactly
what a fresh compiler and empty caches give: the
assertion results and the reachability matrix between every pair of workloads."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperwall.analysis.assertions import check_assertions
from hyperwall.analysis.reach import reach, workload_sides
from hyperwall.analysis.view import FleetView
from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.policy.model import Catalog
from tests.analysis.assertion_gen import assertion_docs
from tests.fleetgen import Doc, fleets, load, workload_edits


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), fleet=fleets())
def test_warm_caches_after_edits_agree_with_a_fresh_check(
    data: st.DataObject, fleet: list[Doc]
) -> None:
    catalog = load([*fleet, *data.draw(assertion_docs(fleet), label="assertions")])
    compiler = FleetCompiler(catalog.config, catalog.workloads.values())
    check_assertions(catalog, None, compiler)  # fills the caches kept with `compiler`
    every = workload_sides(FleetView(catalog, compiler), None)
    reach(FleetView(catalog, compiler), every, every)
    workloads = dict(catalog.workloads)
    declared = list(workloads)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        key, new = data.draw(workload_edits(workloads, declared), label="edit")
        if new is None:
            workloads.pop(key, None)
            compiler.remove_workload(key)
        else:
            workloads[key] = new
            compiler.set_workload(new)
        changed = Catalog(catalog.config, dict(workloads))
        assert check_assertions(changed, None, compiler) == check_assertions(changed)
        warm, cold = FleetView(changed, compiler), FleetView(changed)
        sides = workload_sides(cold, None)
        assert reach(warm, sides, sides) == reach(cold, sides, sides)
