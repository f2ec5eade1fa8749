"""`nft.ct_mark`: marks round-trip, are never mistaken for another's, and every allow
decision of a rendered table sets the mark of its own rule (and nothing else does)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.program import LookupRule, MatchRule
from hyperwall.compiler.rule_numbers import rule_number
from hyperwall.dataplane.nft import ct_mark
from hyperwall.dataplane.nft.render import Options, render_program
from hyperwall.io.files import load_catalog

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@given(st.integers(0, ct_mark.MAX_NUMBER), st.sampled_from(["in", "out"]), st.booleans())
def test_marks_round_trip(number: int, direction: str, folded: bool) -> None:
    assert ct_mark.decode(ct_mark.encode(number, direction, folded)) == ct_mark.Mark(
        number, direction, folded
    )


@given(st.integers(0, 2**32 - 1))
def test_a_mark_without_our_bit_is_not_ours(mark: int) -> None:
    found = ct_mark.decode(mark)
    assert (found is None) == (not mark & ct_mark.MANAGED or mark >= 2**31)


def test_numbers_fit() -> None:
    assert 0 < rule_number("x" * 500) <= ct_mark.MAX_NUMBER
    with pytest.raises(ValueError):
        ct_mark.encode(ct_mark.MAX_NUMBER + 1, "in")


def test_every_allow_of_a_rendered_table_marks_its_rule() -> None:
    catalog = load_catalog([EXAMPLES])
    program = FleetCompiler(catalog.config, catalog.workloads.values()).host_program("hv1")
    state = render_program(program, Options())
    marks: set[int] = set()
    for spec in state.chains.values():
        for rule in spec.rules:
            for statement in json.loads(rule):
                if "mangle" in statement and statement["mangle"]["key"] == {"ct": {"key": "mark"}}:
                    marks.add(statement["mangle"]["value"])
    allows: set[int] = set()
    for chain in program.chains.values():
        direction = "out" if chain.name.startswith("out:") else "in"
        for item in chain.items:
            if item.action != "allow":
                continue
            if isinstance(item, MatchRule):
                allows.add(ct_mark.encode(rule_number(item.rule), direction))
            elif isinstance(item, LookupRule):
                number = rule_number(item.rules[0])
                allows.add(ct_mark.encode(number, direction, folded=True))
    for ep in program.endpoints.values():
        if ep.default == "allow":
            for direction in ("in", "out"):
                allows.add(ct_mark.encode(rule_number("default"), direction))
    assert marks == allows and marks
