"""Folding and incremental refolding (`compiler.fold`, `compiler.boxes`).

- `refold(fold(name, a), b)` equals `fold(name, b)` for random entry lists `a` and random
  edits `b` of them (elements changed, rules losing or gaining their elements or changing
  action, rules inserted, removed or replaced), also along a sequence of edits and with the
  `maybe_changed` hint the compiler passes.
- `BoxIndex` answers like a scan over every element held, also after removals.

Elements come from a tiny space (a few addresses, ports and protocols) so that overlaps,
and so run breaks and failed patches, are frequent.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperwall.compiler import fold as fold_module
from hyperwall.compiler.boxes import BoxIndex
from hyperwall.compiler.fold import Entry, Fold, fold, refold
from hyperwall.compiler.program import BlockElement
from hyperwall.policy.model import Action, RuleDef

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_ids = itertools.count()

ports = st.sampled_from([(1, 1), (2, 2), (3, 3), (1, 3), (0, 65535), (2, 60), (100, 100)])


@st.composite
def elements(draw: st.DrawFn, rule_id: str) -> tuple[BlockElement, ...]:
    found: set[BlockElement] = set()
    for _ in range(draw(st.integers(0, 3))):
        family = draw(st.sampled_from([4, 6]))
        sl = draw(st.integers(0, 5))
        dl = draw(st.integers(0, 3))
        low, high = draw(ports)
        proto = draw(st.sampled_from([0, 6, 6, 6]))
        sh = sl + draw(st.integers(0, 2))
        dh = dl + draw(st.integers(0, 1))
        found.add((family, sl, sh, dl, dh, proto, low, high, rule_id))
    return tuple(sorted(found))


@st.composite
def entries(draw: st.DrawFn, rule: RuleDef | None = None) -> Entry:
    if rule is None:
        n = next(_ids)
        action: Action = draw(st.sampled_from(["allow", "allow", "allow", "drop"]))
        rule = RuleDef(f"p/r{n}", f"r{n}", action, "in", (), (), None, False)
    src = draw(st.sampled_from([None, "g:a", "g:b"]))
    has = draw(st.integers(0, 5)) > 0
    return Entry(rule, src, None, draw(elements(rule.id)) if has else None)


@st.composite
def edited(draw: st.DrawFn, old: list[Entry]) -> list[Entry]:
    new = list(old)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["elements", "elements", "action", "none", "insert", "delete"]))
        if kind == "insert" or not new:
            at = draw(st.integers(0, len(new)))
            new[at:at] = draw(st.lists(entries(), min_size=1, max_size=3))
            continue
        at = draw(st.integers(0, len(new) - 1))
        e = new[at]
        if kind == "elements":
            new[at] = draw(entries(e.rule))
        elif kind == "action":
            flipped: Action = "drop" if e.rule.action == "allow" else "allow"
            new[at] = e._replace(rule=replace(e.rule, action=flipped))
        elif kind == "none":
            new[at] = e._replace(elements=None if e.elements is not None else ())
        else:
            del new[at : at + draw(st.integers(1, 3))]
    return new


@contextmanager
def patch_share(share: int) -> Iterator[None]:
    """Runs in these tests are short: let `refold` patch them as often as `share` allows."""
    kept = fold_module._PATCH_SHARE
    fold_module._PATCH_SHARE = share
    try:
        yield
    finally:
        fold_module._PATCH_SHARE = kept


def same(a: Fold, b: Fold) -> None:
    assert a.chain == b.chain
    assert a.blocks == b.blocks
    assert a.match_sets == b.match_sets
    assert [(r.start, r.end) for r in a.runs] == [(r.start, r.end) for r in b.runs]


@pytest.mark.parametrize("share", [1, fold_module._PATCH_SHARE])
@SETTINGS
@given(data=st.data(), first=st.lists(entries(), max_size=30))
def test_refold_equals_fold(share: int, data: st.DataObject, first: list[Entry]) -> None:
    with patch_share(share):
        check_edits(data, first)


def check_edits(data: st.DataObject, first: list[Entry]) -> None:
    current = fold("in:p", first)
    entries_now = first
    for _ in range(data.draw(st.integers(1, 4))):
        nxt = data.draw(edited(entries_now))
        current = refold(current, nxt)
        same(current, fold("in:p", nxt))
        entries_now = nxt


@pytest.mark.parametrize("share", [1, fold_module._PATCH_SHARE])
@SETTINGS
@given(data=st.data(), first=st.lists(entries(), min_size=1, max_size=40))
def test_refold_with_hint_equals_fold(share: int, data: st.DataObject, first: list[Entry]) -> None:
    """Same length, some positions re-expanded (as after an address set change)."""
    with patch_share(share):
        check_hinted(data, first)


def check_hinted(data: st.DataObject, first: list[Entry]) -> None:
    current = fold("in:p", first)
    entries_now = first
    for _ in range(data.draw(st.integers(1, 4))):
        positions = data.draw(st.sets(st.integers(0, len(first) - 1), max_size=6))
        nxt = list(entries_now)
        for k in positions:
            nxt[k] = data.draw(entries(nxt[k].rule))
        current = refold(current, nxt, positions)
        same(current, fold("in:p", nxt))
        entries_now = nxt


def test_long_run_is_patched_in_place() -> None:
    """One rule of a long run changes port: the run keeps its place, untouched runs keep
    their objects."""

    def entry(i: int, port: int) -> Entry:
        rule = RuleDef(f"p/r{i}", f"r{i}", "allow", "in", (), (), None, False)
        return Entry(rule, "g:a", "g:b", ((4, 1, 1, 2, 2, 6, port, port, rule.id),))

    first = [entry(i, 1000 + i) for i in range(100)]
    first.append(Entry(replace(first[0].rule, id="p/log", name="log", log=True), None, None, None))
    first += [entry(i, 1000 + i) for i in range(200, 300)]
    before = fold("in:p", first)
    nxt = list(first)
    nxt[50] = entry(50, 5000)
    after = refold(before, nxt, [50])
    same(after, fold("in:p", nxt))
    assert after.runs[1] is before.runs[1] and after.runs[2] is before.runs[2]


boxes = st.tuples(
    st.sampled_from([4, 6]),
    st.integers(0, 4),
    st.integers(0, 2),
    st.integers(0, 4),
    st.integers(0, 2),
    st.sampled_from([0, 6]),
    ports,
    st.integers(0, 99),
).map(lambda t: (t[0], t[1], t[1] + t[2], t[3], t[3] + t[4], t[5], *t[6], f"r{t[7]}"))


def overlap(a: BlockElement, b: BlockElement) -> bool:
    return (
        a[0] == b[0]
        and a[5] == b[5]
        and a[6] <= b[7]
        and b[6] <= a[7]
        and a[1] <= b[2]
        and b[1] <= a[2]
        and a[3] <= b[4]
        and b[3] <= a[4]
    )


@SETTINGS
@given(st.lists(boxes, unique=True, max_size=20), st.data())
def test_box_index_matches_a_scan(held: list[BlockElement], data: st.DataObject) -> None:
    index = BoxIndex()
    index.add_all(held)
    gone = data.draw(st.sets(st.sampled_from(held))) if held else set()
    index.remove_all(gone)
    kept = [e for e in held if e not in gone]
    for probe in data.draw(st.lists(boxes, max_size=10)):
        assert index.overlaps(probe) == any(overlap(probe, e) for e in kept)
