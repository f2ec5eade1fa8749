"""Overlap index for folded-block elements: does a new element intersect one already there?

The kernel's concatenated interval sets (nftables "pipapo") refuse an element that overlaps
one already in the set, so the compiler folds a rule into a block only if none of its
elements overlaps the block's. Elements overlap only within one (family, protocol); within
it, narrow port ranges are bucketed by port and wide ones scanned, so the check stays cheap
for the common shape (many rules, few ports each).

Overlap is a symmetric relation between two elements (same family and protocol, port ranges
intersect, source and destination ranges both intersect); the index answers "does `e`
overlap any element held", and elements can be taken out again (`remove`), which the
incremental fold (`compiler.fold`) uses to patch a block in place. The index holds the
elements themselves (no copies); one element is held at most once.
"""

from __future__ import annotations

from collections.abc import Iterable

from hyperwall.compiler.program import BlockElement

_NARROW = 64  # port ranges up to this span are bucketed port by port


def _crosses(a: BlockElement, b: BlockElement) -> bool:
    """Source and destination ranges of `a` and `b` both intersect."""
    return a[1] <= b[2] and b[1] <= a[2] and a[3] <= b[4] and b[3] <= a[4]


# A port's bucket: the one element there, or a list of them (most ports hold one element,
# and a chain of 100,000 rules would otherwise make as many one-element lists).
Bucket = BlockElement | list[BlockElement]


def _bucket_crosses(e: BlockElement, bucket: Bucket | None) -> bool:
    if bucket is None:
        return False
    if type(bucket) is list:
        return any(_crosses(e, o) for o in bucket)
    return _crosses(e, bucket)  # type: ignore[arg-type]


class BoxIndex:
    __slots__ = ("_narrow", "_wide")

    def __init__(self) -> None:
        # (family, proto) -> port -> bucket; and -> elements with a wide port range
        self._narrow: dict[tuple[int, int], dict[int, Bucket]] = {}
        self._wide: dict[tuple[int, int], list[BlockElement]] = {}

    def overlaps(self, e: BlockElement) -> bool:
        shape = (e[0], e[5])
        low, high = e[6], e[7]
        wide = self._wide.get(shape)
        if wide:
            for o in wide:
                if o[6] <= high and low <= o[7] and _crosses(e, o):
                    return True
        narrow = self._narrow.get(shape)
        if not narrow:
            return False
        if low == high:
            return _bucket_crosses(e, narrow.get(low))
        if high - low <= _NARROW:
            return any(_bucket_crosses(e, narrow.get(p)) for p in range(low, high + 1))
        return any(_bucket_crosses(e, b) for p, b in narrow.items() if low <= p <= high)

    def overlaps_any(self, elements: Iterable[BlockElement]) -> bool:
        return any(self.overlaps(e) for e in elements)

    def add(self, e: BlockElement) -> None:
        shape = (e[0], e[5])
        low, high = e[6], e[7]
        if high - low <= _NARROW:
            narrow = self._narrow.get(shape)
            if narrow is None:
                narrow = self._narrow[shape] = {}
            for p in range(low, high + 1) if low != high else (low,):
                bucket = narrow.get(p)
                if bucket is None:
                    narrow[p] = e
                elif type(bucket) is list:
                    bucket.append(e)
                else:
                    narrow[p] = [bucket, e]  # type: ignore[list-item]
        else:
            self._wide.setdefault(shape, []).append(e)

    def add_all(self, elements: Iterable[BlockElement]) -> None:
        for e in elements:
            self.add(e)

    def remove(self, e: BlockElement) -> None:
        """Take out `e`, which must be held."""
        shape = (e[0], e[5])
        low, high = e[6], e[7]
        if high - low <= _NARROW:
            narrow = self._narrow[shape]
            for p in range(low, high + 1):
                bucket = narrow[p]
                if type(bucket) is list:
                    bucket.remove(e)
                    if len(bucket) == 1:
                        narrow[p] = bucket[0]
                else:
                    assert bucket == e
                    del narrow[p]
        else:
            self._wide[shape].remove(e)

    def remove_all(self, elements: Iterable[BlockElement]) -> None:
        for e in elements:
            self.remove(e)
