"""`hyperwall.analysis.atoms`: against brute force over every address of a small span."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hyperwall.analysis.atoms import Atoms
from hyperwall.compiler.intervals import Interval, merge

SPAN = (0, 47)


@st.composite
def interval_sets(draw: st.DrawFn) -> list[tuple[Interval, ...]]:
    out = []
    for _ in range(draw(st.integers(1, 6))):
        pieces = []
        for _ in range(draw(st.integers(0, 4))):
            low = draw(st.integers(*SPAN))
            pieces.append((low, min(SPAN[1], low + draw(st.integers(0, 20)))))
        if draw(st.integers(0, 5)) == 0:
            pieces.append(SPAN)  # `any`: every atom, kept as the (empty) list of those outside
        out.append(merge(pieces))
    return out


def _sets_of(sets: list[tuple[Interval, ...]], address: int) -> frozenset[int]:
    return frozenset(k for k, s in enumerate(sets) if any(a <= address <= b for a, b in s))


@given(sets=interval_sets())
def test_atoms_are_the_distinct_memberships(sets: list[tuple[Interval, ...]]) -> None:
    atoms = Atoms(sets, SPAN)
    addresses = range(SPAN[0], SPAN[1] + 1)
    memberships = {_sets_of(sets, x) for x in addresses}
    assert atoms.count == len(memberships)
    atom_of = {x: atoms.of([(x, x)]) for x in addresses}
    assert all(len(found) == 1 for found in atom_of.values())
    # two addresses share an atom exactly when they lie in the same sets
    by_atom: dict[int, set[frozenset[int]]] = {}
    for x, found in atom_of.items():
        by_atom.setdefault(next(iter(found)), set()).add(_sets_of(sets, x))
    assert all(len(kinds) == 1 for kinds in by_atom.values())
    for k in range(len(sets)):
        contained, listed = atoms.inside(k)
        inside = {next(iter(atom_of[x])) for x in addresses if k in _sets_of(sets, x)}
        assert set(listed) == (inside if contained else set(range(atoms.count)) - inside)
        assert 2 * len(listed) <= atoms.count  # the shorter of the two lists


@given(sets=interval_sets(), data=st.data())
def test_masks_are_the_distinct_box_masks_over_every_address(
    sets: list[tuple[Interval, ...]], data: st.DataObject
) -> None:
    atoms = Atoms(sets, SPAN)
    chosen = data.draw(st.lists(st.sampled_from(range(len(sets))), unique=True), label="sets")
    # each chosen set gets its own bits (boxes sharing it), disjoint from the others'
    bits = {}
    position = 0
    for k in chosen:
        width = data.draw(st.integers(1, 3), label="boxes")
        bits[k] = ((1 << width) - 1) << position
        position += width
    expected = {
        sum(b for k, b in bits.items() if k in _sets_of(sets, x))
        for x in range(SPAN[0], SPAN[1] + 1)
    }
    assert atoms.masks(bits.items()) == expected
