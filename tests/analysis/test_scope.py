"""`scope.changed_keys` (which workloads a change put, edited or deleted; the gate's
`touched_assertions` and the view's address index read it) against the plain definition,
on mappings edited in place (same key order) and rebuilt (any order)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hyperwall.analysis.scope import changed_keys

values = st.lists(st.integers(0, 3), max_size=3)  # lists: equal need not be identical
mappings = st.dictionaries(st.sampled_from("abcdefgh"), values, max_size=8)


def reference(old: dict[str, list[int]], new: dict[str, list[int]]) -> set[str]:
    return {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}


@given(mappings, st.data())
def test_an_edited_copy_differs_exactly_where_edited(
    old: dict[str, list[int]], data: st.DataObject
) -> None:
    new = dict(old)
    for key in data.draw(st.lists(st.sampled_from("abcdefgh"), max_size=4)):
        action = data.draw(st.sampled_from(["put", "copy", "delete"]))
        if action == "put":
            new[key] = data.draw(values)
        elif action == "copy" and key in new:
            new[key] = list(new[key])  # another object, equal: not a change
        else:
            new.pop(key, None)
    found = changed_keys(old, new)
    assert len(found) == len(set(found))
    assert set(found) == reference(old, new)


@given(mappings, mappings)
def test_any_two_mappings_differ_at_the_reference_keys(
    old: dict[str, list[int]], new: dict[str, list[int]]
) -> None:
    assert set(changed_keys(old, new)) == reference(old, new)
    assert changed_keys(old, old) == []
