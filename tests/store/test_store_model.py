"""Property test: random commits and compactions against an in-memory model, on both stores.

The model is a list of document sets, one per revision. After a random sequence the store
must agree with it at every kept revision: snapshots, history summaries, full diffs, and a
watch from the oldest kept revision that rebuilds every state by replaying the diffs.
"""

from __future__ import annotations

from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperwall.store import Compacted, DocKey, Resync, Revision, Store
from tests.store.conftest import UrlFactory
from tests.store.support import doc, opened, run, take

KEYS = [DocKey("Group", tenant, name) for tenant in (None, "acme") for name in "abc"]
State = dict[DocKey, dict[str, Any]]


def body(key: DocKey, value: int) -> dict[str, Any]:
    return doc(key.name, key.tenant, kind=key.kind, value=value)


@dataclass(frozen=True)
class Commit:
    puts: dict[DocKey, int]
    deletes: frozenset[DocKey]


@dataclass(frozen=True)
class Compact:
    fraction: float


@st.composite
def commits(draw: st.DrawFn) -> Commit:
    puts = draw(st.dictionaries(st.sampled_from(KEYS), st.integers(0, 2), max_size=4))
    deletes = draw(st.frozensets(st.sampled_from([k for k in KEYS if k not in puts])))
    return Commit(puts, deletes)


operations = st.lists(
    st.one_of(commits(), commits(), commits(), st.builds(Compact, st.floats(0, 1))),
    max_size=12,
)


async def check(store: Store, ops: list[Commit | Compact]) -> None:
    states: list[State] = [{}]
    floor = 0
    for op in ops:
        if isinstance(op, Compact):
            floor = max(floor, floor + round(op.fraction * (len(states) - 1 - floor)))
            await store.compact(floor)
            continue
        puts = [body(k, v) for k, v in op.puts.items()]
        info = await store.commit(puts, sorted(op.deletes, key=DocKey.sort_key), "p", "m")
        new = {k: v for k, v in states[-1].items() if k not in op.deletes}
        new.update({k: body(k, v) for k, v in op.puts.items()})
        if new == states[-1]:
            assert info is None
        else:
            assert info is not None and info.number == len(states)
            states.append(new)

    current = len(states) - 1
    assert await store.revision() == current
    for r in range(floor):
        with pytest.raises(Compacted):
            await store.snapshot(r)
    for r in range(floor, current + 1):
        assert (await store.snapshot(r)).documents == states[r]
    history = await store.history(limit=100)
    assert [h.number for h in history] == list(range(current, max(floor, 1) - 1, -1))
    for h in history:
        old, new = states[h.number - 1], states[h.number]
        assert set(h.added) == new.keys() - old.keys()
        assert set(h.removed) == old.keys() - new.keys()
        assert set(h.changed) == {k for k in old.keys() & new.keys() if old[k] != new[k]}
        full = await store.revision_info(h.number)
        assert {c.key: (c.before, c.after) for c in full.changes} == {
            k: (old.get(k), new.get(k)) for k in (*h.added, *h.changed, *h.removed)
        }

    async with aclosing(store.watch(floor)) as events:
        replayed = dict(states[floor])
        for event in await take(events, current - floor):
            assert isinstance(event, Revision)
            for change in event.changes:
                if change.after is None:
                    del replayed[change.key]
                else:
                    replayed[change.key] = change.after
            assert replayed == states[event.number]
    if floor > 0:
        async with aclosing(store.watch(floor - 1)) as events:
            assert await take(events, 1) == [Resync(current)]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
def test_store_agrees_with_the_model(new_url: UrlFactory, ops: list[Commit | Compact]) -> None:
    async def main() -> None:
        async with opened(new_url()) as store:
            await check(store, ops)

    run(main())
