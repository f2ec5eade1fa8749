"""The wire codec (`compiler.program_codec`) and the incremental digest (`compiler.digest`).

- `program_from_wire(json(program_to_wire(p))) == p`, and the same for deltas, for the
  programs and deltas of random fleets and their edits;
- `updated_digest(digest(old), old, diff(old, new)) == digest(new)`; different programs of a
  fleet have different digests, equal ones equal digests, whatever object identity;
- malformed input is refused with the path of the bad value.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given

from hyperwall.compiler import digest as dg
from hyperwall.compiler.delta import apply, diff
from hyperwall.compiler.digest import program_digest, updated_digest
from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.program import HostProgram
from hyperwall.compiler.program_codec import (
    WireError,
    delta_from_wire,
    delta_to_wire,
    program_from_wire,
    program_to_wire,
)
from tests.compiler.test_incremental import (
    ALL_HOSTS,
    SETTINGS,
    SetConfig,
    Step,
    scenarios,
)
from tests.fleetgen import Doc, load


def through_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def histories(docs: list[Doc], steps: list[Step]) -> list[dict[str, HostProgram]]:
    catalog = load(docs)
    compiler = FleetCompiler(catalog.config, catalog.workloads.values())
    out = [{h: compiler.host_program(h) for h in ALL_HOSTS}]
    for step in steps:
        if isinstance(step, SetConfig):
            compiler.set_config(step.config)
        elif step.workload is None:
            compiler.remove_workload(step.key)
        else:
            compiler.set_workload(step.workload)
        out.append({h: compiler.host_program(h) for h in ALL_HOSTS})
    return out


@SETTINGS
@given(scenarios())
def test_wire_round_trip_and_incremental_digest(scenario: tuple[list[Doc], list[Step]]) -> None:
    versions = histories(*scenario)
    for before, after in itertools.pairwise(versions):
        for h in ALL_HOSTS:
            old, new = before[h], after[h]
            assert program_from_wire(through_json(program_to_wire(new))) == new
            change = diff(old, new)
            decoded = delta_from_wire(through_json(delta_to_wire(change)))
            assert decoded == change
            assert apply(old, decoded) == new
            assert updated_digest(program_digest(old), old, decoded) == program_digest(new)
            assert (program_digest(old) == program_digest(new)) == (old == new)


@SETTINGS
@given(scenarios())
def test_digest_does_not_depend_on_object_identity(scenario: tuple[list[Doc], list[Step]]) -> None:
    last = histories(*scenario)[-1]
    for program in last.values():
        copy = program_from_wire(through_json(program_to_wire(program)))  # new objects
        dg._cache.clear()
        first = program_digest(program)
        assert program_digest(copy) == first


BAD: list[tuple[dict[str, Any], str]] = [
    ({"host": "hv1", "addressSets": {}, "blockSets": {}, "chains": {}}, "endpoints: missing"),
    (
        {
            "host": "hv1",
            "addressSets": {"s": {"v4": [[1]], "v6": []}},
            "blockSets": {},
            "chains": {},
            "endpoints": {},
        },
        "addressSets.s.v4",
    ),
    (
        {
            "host": "hv1",
            "addressSets": {"s": {"v4": [[0, 2**32]], "v6": []}},
            "blockSets": {},
            "chains": {},
            "endpoints": {},
        },
        "addressSets.s.v4",
    ),
    (
        {
            "host": "hv1",
            "addressSets": {},
            "blockSets": {},
            "endpoints": {},
            "chains": {"in:p": [["m", "p/r", "maybe", False, None, None, None]]},
        },
        "chains.in:p[0][2]",
    ),
    (
        {"host": 7, "addressSets": {}, "blockSets": {}, "chains": {}, "endpoints": {}},
        "host",
    ),
]


@pytest.mark.parametrize(("value", "where"), BAD)
def test_malformed_program_names_the_bad_value(value: dict[str, Any], where: str) -> None:
    with pytest.raises(WireError) as info:
        program_from_wire(value)
    assert where in str(info.value)


def test_malformed_delta_is_refused() -> None:
    with pytest.raises(WireError, match="addressElements"):
        delta_from_wire({**delta_to_wire(diff(EMPTY, EMPTY)), "addressElements": [{"name": 1}]})


EMPTY = HostProgram("hv1", {}, {}, {}, {})
