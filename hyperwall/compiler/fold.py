"""Folding a chain's rules into blocks, and folding again in proportion to a change.

Counterpart of `compiler.fleet` (which computes each rule's `Entry` and keeps one `Fold`
per chain). A chain's entries fold greedily, left to right, into *runs*: a run collects
consecutive rules with one action that have block elements, as long as no element of the
next rule overlaps (`compiler.boxes`) an element already in the run; the first rule that
cannot join ends the run (it is the run's *terminator*) and starts the next. A run of two or
more rules becomes one `LookupRule` over a `BlockSet` named `b:CHAIN:FIRSTRULE`; a run of
one rule, and a rule without elements, a `MatchRule`.

`refold(old, entries)` returns exactly `fold(old.name, entries)` (property-tested against
it), doing work in proportion to what changed. Why that is exact:

- The fold is memoryless at a run start: the runs from a rule that starts a run onward
  depend only on the entries from that rule onward. So where the new fold starts a run at a
  position where an old run started, and that run's entries and its terminator are
  unchanged, the old run is the new run (the same item objects, so diffs skip them).
- Overlap is a pairwise relation between two rules' elements. A run is exactly: rules of
  one action, all with elements, pairwise disjoint, whose terminator cannot join (it has no
  elements, another action, or overlaps one of the run's rules), or the chain ends. So a
  run whose changed rules still fit is patched in place: their old elements leave the run's
  index, the new ones are checked against the rest and added, and the terminator is checked
  again. If a check fails, the run is folded again from its start.
- Everything else (a rule that gains or loses its elements or its action, rules inserted
  or removed) is folded greedily from the start of the run concerned until the new runs meet
  an old run start again.

`refold` consumes `old`: it may patch the overlap indexes of old runs in place.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from hyperwall.compiler.boxes import BoxIndex
from hyperwall.compiler.program import (
    BlockElement,
    BlockSet,
    Chain,
    ChainItem,
    LookupRule,
    MatchRule,
)
from hyperwall.policy.model import RuleDef

_PATCH_SHARE = 4  # patch a run in place only if at most 1/_PATCH_SHARE of its rules changed


class Entry(NamedTuple):
    """One rule of a chain as folding sees it; `elements` None: it stays a MatchRule.
    (A named tuple: a chain of 100,000 rules makes as many, and they are cheap to make.)"""

    rule: RuleDef
    src: str | None
    dst: str | None
    elements: tuple[BlockElement, ...] | None


def same_entry(a: Entry, b: Entry) -> bool:
    return a is b or (
        a.src == b.src
        and a.dst == b.dst
        and a.elements == b.elements
        and (a.rule is b.rule or a.rule == b.rule)
    )


@dataclass(slots=True)
class _Run:
    """Entries [start, end) of a chain as one run, with what it compiles to."""

    start: int
    end: int
    index: BoxIndex | None  # the run's elements, for a run of rules with elements
    items: tuple[ChainItem, ...]
    block: BlockSet | None
    match_sets: tuple[str, ...]  # address sets its MatchRule names


@dataclass(slots=True)
class Fold:
    """A chain folded: the compiled chain and blocks, and the runs to refold from."""

    name: str
    entries: Sequence[Entry]
    runs: list[_Run]
    chain: Chain
    blocks: dict[str, BlockSet]
    match_sets: frozenset[str]


def _match_rule(entry: Entry) -> _Run:
    r = entry.rule
    item = MatchRule(r.id, r.action, r.log, entry.src, entry.dst, r.services)
    sets = tuple(s for s in (entry.src, entry.dst) if s is not None)
    return _Run(0, 0, None, (item,), None, sets)


def _block_name(chain: str, entries: Sequence[Entry], start: int) -> str:
    return f"b:{chain}:{entries[start].rule.name}"


def _make_run(
    chain: str, entries: Sequence[Entry], start: int, end: int, index: BoxIndex | None
) -> _Run:
    if end - start == 1:
        run = _match_rule(entries[start])
        run.start, run.end, run.index = start, end, index
        return run
    members = entries[start:end]
    name = _block_name(chain, entries, start)
    elements = frozenset(e for m in members for e in m.elements or ())
    block = BlockSet(name, elements)
    item = LookupRule(name, members[0].rule.action, tuple(m.rule.id for m in members))
    return _Run(start, end, index, (item,), block, ())


def _greedy(chain: str, entries: Sequence[Entry], start: int) -> _Run:
    """The run that starts at `start`, folded from scratch."""
    first = entries[start]
    if first.elements is None:
        run = _match_rule(first)
        run.start, run.end = start, start + 1
        return run
    index = BoxIndex()
    index.add_all(first.elements)
    action = first.rule.action
    end = start + 1
    count = len(entries)
    overlaps, add = index.overlaps, index.add
    while end < count:
        e = entries[end]
        elements = e.elements
        if elements is None or e.rule.action != action:
            break
        if len(elements) == 1:  # the common case, without a loop
            element = elements[0]
            if overlaps(element):
                break
            add(element)
        elif index.overlaps_any(elements):
            break
        else:
            index.add_all(elements)
        end += 1
    return _make_run(chain, entries, start, end, index)


def _assemble(name: str, entries: Sequence[Entry], runs: list[_Run], old: Chain | None) -> Fold:
    items = tuple(item for run in runs for item in run.items)
    chain = old if old is not None and old.items == items else Chain(name, items)
    blocks = {run.block.name: run.block for run in runs if run.block is not None}
    match_sets = frozenset(s for run in runs for s in run.match_sets)
    return Fold(name, entries, runs, chain, blocks, match_sets)


def fold(name: str, entries: Sequence[Entry]) -> Fold:
    """Fold chain `name`'s entries from scratch."""
    runs: list[_Run] = []
    start = 0
    while start < len(entries):
        run = _greedy(name, entries, start)
        runs.append(run)
        start = run.end
    return _assemble(name, entries, runs, None)


def _terminated(entries: Sequence[Entry], end: int, action: str, index: BoxIndex) -> bool:
    """Whether the rule at `end` cannot join a run of `action` whose elements `index` holds."""
    if end == len(entries):
        return True
    t = entries[end]
    return t.elements is None or t.rule.action != action or index.overlaps_any(t.elements)


def _patch(
    name: str, old: Sequence[Entry], entries: Sequence[Entry], run: _Run, touched: list[int]
) -> _Run | None:
    """`run` (same positions in `old` and `entries`) with its `touched` rules changed, if
    the run still holds; None if it must be folded again (its index is then spoilt)."""
    index, block = run.index, run.block
    if index is None or block is None or len(touched) * _PATCH_SHARE > run.end - run.start:
        return None
    assert isinstance(run.items[0], LookupRule)
    action = run.items[0].action
    for t in touched:
        if entries[t].elements is None or entries[t].rule.action != action:
            return None
    removed: list[BlockElement] = []
    for t in touched:
        elements = old[t].elements
        assert elements is not None
        index.remove_all(elements)
        removed.extend(elements)
    added: list[BlockElement] = []
    for t in touched:
        elements = entries[t].elements
        assert elements is not None
        if index.overlaps_any(elements):
            return None
        index.add_all(elements)
        added.extend(elements)
    if not _terminated(entries, run.end, action, index):
        return None
    new_name = _block_name(name, entries, run.start)
    content = block.elements.difference(removed).union(added)
    if new_name != block.name or content != block.elements:
        block = BlockSet(new_name, content)
    item = run.items[0]
    if any(old[t].rule.id != entries[t].rule.id for t in touched) or new_name != item.block:
        ids = tuple(entries[k].rule.id for k in range(run.start, run.end))
        item = LookupRule(new_name, action, ids)
    return _Run(run.start, run.end, index, (item,), block, ())


def refold(old: Fold, entries: Sequence[Entry], maybe_changed: Iterable[int] | None = None) -> Fold:
    """`fold(old.name, entries)`, reusing and patching `old`'s runs (consumes `old`).

    `maybe_changed`, if given and `entries` is as long as before: the only positions whose
    entry may differ; every other position must hold the very same `Entry` object."""
    name, before = old.name, old.entries
    n_old, n = len(before), len(entries)
    # Map old runs to new positions. Same length: position for position, and `changed`
    # lists the positions whose entry differs. Otherwise: the common prefix and suffix keep
    # their runs (shifted), runs touching the middle are dropped.
    changed: list[int] = []
    mapped: dict[int, tuple[_Run, int]] = {}  # new start -> (old run, shift)
    if n == n_old:
        if maybe_changed is None:
            pairs: Iterable[tuple[int, tuple[Entry, Entry]]] = enumerate(
                zip(before, entries, strict=True)
            )
        else:
            pairs = ((k, (before[k], entries[k])) for k in maybe_changed)
        changed = sorted(k for k, (a, b) in pairs if a is not b and not same_entry(a, b))
        mapped = {run.start: (run, 0) for run in old.runs}
    else:
        limit = min(n, n_old)
        prefix = 0
        while prefix < limit and same_entry(before[prefix], entries[prefix]):
            prefix += 1
        suffix = 0
        while suffix < limit - prefix and same_entry(before[-1 - suffix], entries[-1 - suffix]):
            suffix += 1
        shift = n - n_old
        for run in old.runs:
            if run.end <= prefix:
                mapped[run.start] = (run, 0)
            elif run.start >= n_old - suffix:
                mapped[run.start + shift] = (run, shift)
    runs: list[_Run] = []
    start = 0
    while start < n:
        found = mapped.get(start)
        if found is not None:
            run, shift = found
            end = run.end + shift
            touched = changed[bisect_left(changed, start) : bisect_left(changed, end)]
            if not touched and (
                run.index is None  # a rule without elements is a run of its own
                or (run.end == n_old and end == n)
                or (run.end < n_old and end < n and same_entry(before[run.end], entries[end]))
                or _terminated(entries, end, run.items[0].action, run.index)
            ):
                if shift:
                    run = _Run(start, end, run.index, run.items, run.block, run.match_sets)
                runs.append(run)
                start = end
                continue
            if touched and shift == 0:
                patched = _patch(name, before, entries, run, touched)
                if patched is not None:
                    runs.append(patched)
                    start = end
                    continue
        run = _greedy(name, entries, start)
        runs.append(run)
        start = run.end
    return _assemble(name, entries, runs, old.chain)
