"""`backend.Step`, the steady path's change of the table, against plain set arithmetic. Pure.

Whatever sequence of element changes, puts and drops a step records, `commit` must leave
each set equal to applying them one by one to a copy, and the recorded (to delete, to add)
pairs must be exact: deletions present in the current set, additions absent from it.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hyperwall.dataplane.nft.backend import Step
from hyperwall.dataplane.nft.table import Element, SetSpec, TableState

NAMES = ("a_x_4", "a_y_4")
values = st.frozensets(st.tuples(st.integers(0, 6), st.integers(0, 6)), max_size=6)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("change"), st.sampled_from(NAMES), values, values),
        st.tuples(st.just("put"), st.sampled_from(NAMES), values, st.just(frozenset())),
        st.tuples(
            st.just("drop"), st.sampled_from(NAMES), st.just(frozenset()), st.just(frozenset())
        ),
    ),
    max_size=6,
)


@given(values, values, operations)
def test_commit_equals_the_changes_applied_one_by_one(
    x: frozenset[Element],
    y: frozenset[Element],
    ops: list[tuple[str, str, frozenset[Element], frozenset[Element]]],
) -> None:
    current = TableState()
    for name, elements in zip(NAMES, (x, y), strict=True):
        current.put_set(SetSpec(name, ("ipv4_addr",), True), set(elements))
    before = {name: set(v) for name, v in current.elements.items()}
    expected: dict[str, set[Element]] = {name: set(v) for name, v in before.items()}
    step = Step(TableState(dict(current.sets), dict(current.elements), dict(current.chains)))
    for op, name, first, second in ops:
        if op == "change":
            step.change(name, set(first), set(second))
            if name in expected:
                expected[name] = (expected[name] - first) | second
        elif op == "put":
            step.put(SetSpec(name, ("ipv4_addr",), True), set(first))
            expected[name] = set(first)
        else:
            step.drop(name)
            expected.pop(name, None)
    for name in NAMES:
        assert step.holds(name) == bool(expected.get(name))
    for name, (gone, new) in step.elements.items():
        assert name not in step.fresh
        assert gone <= before[name] and not new & before[name]
        assert (before[name] - gone) | new == expected[name]
    state = step.commit()
    assert {n: state.elements[n] for n in state.sets} == expected
    assert step.touched >= {name for _, name, _, _ in ops}
