"""Overlap index for folded-block elements: does a new element intersect one already there?

The kernel's concatenated interval sets (nftables "pipapo") refuse an element that overlaps
one already in the set, so the compiler folds a rule into a block only if none of its
elements overlaps the block's. Elements overlap only within one (family, protocol); within
it, narrow port ranges are bucketed by port and wide ones scanned, so the check stays cheap
for the common shape (many rules, few ports each).
"""

from __future__ import annotations

from collections import defaultdict

from hyperwall.compiler.program import BlockElement

_NARROW = 64  # port ranges up to this span are bucketed port by port

Box = tuple[int, int, int, int]  # src low, src high, dst low, dst high


def _crosses(a: Box, b: Box) -> bool:
    return a[0] <= b[1] and b[0] <= a[1] and a[2] <= b[3] and b[2] <= a[3]


class BoxIndex:
    def __init__(self) -> None:
        # (family, proto) -> port -> boxes; and -> list of (low, high, box) for wide ranges
        self._narrow: dict[tuple[int, int], dict[int, list[Box]]] = defaultdict(dict)
        self._wide: dict[tuple[int, int], list[tuple[int, int, Box]]] = defaultdict(list)

    def overlaps(self, e: BlockElement) -> bool:
        family, sl, sh, dl, dh, proto, low, high, _ = e
        box = (sl, sh, dl, dh)
        shape = (family, proto)
        for w_low, w_high, other in self._wide.get(shape, ()):
            if w_low <= high and low <= w_high and _crosses(box, other):
                return True
        narrow = self._narrow.get(shape)
        if not narrow:
            return False
        if high - low <= _NARROW:
            ports = range(low, high + 1)
            return any(_crosses(box, o) for p in ports for o in narrow.get(p, ()))
        return any(
            _crosses(box, o) for p, boxes in narrow.items() if low <= p <= high for o in boxes
        )

    def add(self, e: BlockElement) -> None:
        family, sl, sh, dl, dh, proto, low, high, _ = e
        box = (sl, sh, dl, dh)
        if high - low <= _NARROW:
            narrow = self._narrow[(family, proto)]
            for p in range(low, high + 1):
                narrow.setdefault(p, []).append(box)
        else:
            self._wide[(family, proto)].append((low, high, box))
