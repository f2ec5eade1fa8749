"""The address space of one family cut by every address set in play: the fleet's atoms.

An atom is a set of addresses that lie in exactly the same of the given interval sets (not
necessarily contiguous: two runs of addresses inside the same sets are one atom). Any
question that looks only at those sets treats all addresses of an atom alike, so a set is
fully described by the atoms it contains. `Atoms(sets, span)` sweeps the cut points of
every set once (the running membership as one Python int, bit k: set k) and numbers the
distinct memberships; `inside(k)` lists the atoms of set k, or those outside it when that
list is shorter (`outside`), which keeps a set that covers almost everything (a large
CIDR, `any`) as cheap as a small one.

`lint` reads an endpoint's rules through it: the classes of an endpoint (the addresses in
the same of its boxes, `decisions.segments`) are unions of atoms, so the distinct box sets
of an endpoint are the distinct masks `Atoms.masks` computes, one dictionary step per
(set, atom), instead of sweeping every endpoint's intervals again. Pure.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence

from hyperwall.compiler.intervals import Interval


class Atoms:
    """The atoms of `span` cut by `sets` (each sorted and merged, inside `span`)."""

    def __init__(self, sets: Sequence[tuple[Interval, ...]], span: Interval) -> None:
        low, high = span
        toggles: dict[int, list[int]] = defaultdict(list)
        for k, intervals in enumerate(sets):
            for a, b in intervals:
                toggles[a].append(k)
                if b < high:
                    toggles[b + 1].append(k)
        cuts = sorted(c for c in toggles if low < c <= high)
        starts = [low, *cuts]
        ids: dict[int, int] = {}
        run_atoms: list[int] = []
        mask = 0
        for k in toggles.get(low, ()):
            mask ^= 1 << k
        run_atoms.append(ids.setdefault(mask, len(ids)))
        for c in cuts:
            for k in toggles[c]:
                mask ^= 1 << k
            run_atoms.append(ids.setdefault(mask, len(ids)))
        self.count = len(ids)
        self._starts = starts
        self._run_atoms = run_atoms
        self._sets = sets
        self._inside: dict[int, tuple[bool, list[int]]] = {}

    def of(self, intervals: Iterable[Interval]) -> set[int]:
        """The atoms that the addresses of `intervals` lie in."""
        starts, run_atoms = self._starts, self._run_atoms
        found: set[int] = set()
        for a, b in intervals:
            found.update(run_atoms[bisect_right(starts, a) - 1 : bisect_left(starts, b + 1)])
        return found

    def inside(self, k: int) -> tuple[bool, list[int]]:
        """Set k as (True, the atoms it contains) or (False, the atoms it does not
        contain), whichever list is shorter; computed once per set."""
        found = self._inside.get(k)
        if found is None:
            atoms = self.of(self._sets[k])
            if 2 * len(atoms) > self.count:
                found = (False, sorted(set(range(self.count)) - atoms))
            else:
                found = (True, sorted(atoms))
            self._inside[k] = found
        return found

    def masks(self, bits: Iterable[tuple[int, int]]) -> set[int]:
        """For sets given as (set k, its bits), each bit pattern disjoint from the others:
        the distinct ORs of the bits of the sets each atom lies in, over every atom."""
        everywhere = 0
        touched: dict[int, int] = {}
        for k, b in bits:
            contained, atoms = self.inside(k)
            if not contained:
                everywhere ^= b
            get = touched.get
            for atom in atoms:
                touched[atom] = get(atom, 0) ^ b
        out = {everywhere ^ m for m in touched.values()}
        if len(touched) < self.count:
            out.add(everywhere)
        return out
