"""Commit arithmetic: canonical JSON, validation, the change plan, whole-set differences."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperwall.store import DocKey, InvalidDocument
from hyperwall.store.changes import (
    BodyChange,
    apply_changes,
    canonical,
    difference,
    plan,
    prepare,
)
from tests.store.support import doc

A, B = doc("a"), doc("b", "acme")
KA, KB = DocKey.of(A), DocKey.of(B)


def test_canonical_text_ignores_key_order() -> None:
    assert canonical({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == canonical(
        {"a": [1, {"c": 3, "d": 2}], "b": 1}
    )
    assert canonical({"x": "é"}) == '{"x":"é"}'


def test_plan_lists_only_real_changes_sorted_by_key() -> None:
    prepared = prepare([B, A], [DocKey("Group", None, "gone"), DocKey("Group", None, "absent")])
    current = {KA: canonical(A), DocKey("Group", None, "gone"): "{}"}
    assert plan(prepared, current) == (
        BodyChange(DocKey("Group", None, "gone"), "{}", None),
        BodyChange(KB, None, canonical(B)),
    )
    assert plan(prepare([A], []), {KA: canonical(A)}) == ()


def test_prepare_refuses_keys_named_twice() -> None:
    for puts, deletes in (([A, A], []), ([A], [KA]), ([], [KA, KA])):
        with pytest.raises(InvalidDocument):
            prepare(puts, deletes)
    with pytest.raises(InvalidDocument):
        prepare([], ["Group/a"])  # type: ignore[list-item]


def test_apply_changes_is_what_the_manager_validates() -> None:
    assert apply_changes({KA: A}, [B], [KA]) == {KB: B}


documents = st.dictionaries(
    st.sampled_from([DocKey("Group", t, n) for t in (None, "acme") for n in "abc"]),
    st.integers(0, 3),
)


@given(documents, documents)
def test_difference_turns_one_set_into_the_other(
    old: dict[DocKey, int], new: dict[DocKey, int]
) -> None:
    def as_docs(values: dict[DocKey, int]) -> dict[DocKey, dict[str, object]]:
        return {k: doc(k.name, k.tenant, value=v) for k, v in values.items()}

    puts, deletes = difference(as_docs(old), as_docs(new))
    assert apply_changes(as_docs(old), puts, deletes) == as_docs(new)
    assert (puts, deletes) == ([], []) or old != new
