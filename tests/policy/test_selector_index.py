"""Tests for `hyperwall.policy.selector_index`: fleet-wide selector evaluation.

Everything is checked against brute force: `Selector.matches` (tested in `test_selector`)
applied to every workload's labels.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from hyperwall.policy.selector import Selector, parse_selector
from hyperwall.policy.selector_index import LabelIndex, SelectorIndex
from tests.policy.test_selector import nodes

WIDS = [f"w{i}" for i in range(6)]
SIDS = [f"s{i}" for i in range(4)]
keys = st.sampled_from(["a", "b", "c"])
values = st.sampled_from(["1", "2"])
label_sets = st.dictionaries(keys, values)
selectors = nodes(keys, values).map(lambda root: Selector("", root))
scopes = st.none() | st.frozensets(st.sampled_from([*WIDS, "ghost"]))


def brute(
    selector: Selector, workloads: Mapping[str, Mapping[str, str]], within: frozenset[str] | None
) -> set[str]:
    return {
        wid
        for wid, labels in workloads.items()
        if (within is None or wid in within) and selector.matches(labels)
    }


# --- LabelIndex --------------------------------------------------------------------------


def test_label_index_basics() -> None:
    index = LabelIndex()
    index.set("w1", {"app": "web", "env": "prod"})
    index.set("w2", {"app": "db"})
    assert set(index.ids()) == {"w1", "w2"}
    assert "w1" in index and "w3" not in index and len(index) == 2
    assert index.labels("w1") == {"app": "web", "env": "prod"}
    with pytest.raises(TypeError):
        index.labels("w1")["app"] = "x"  # type: ignore[index]
    with pytest.raises(KeyError):
        index.labels("w3")

    index.set("w1", {"app": "db"})  # replace: env is gone
    assert index.select(parse_selector('app == "db"')) == {"w1", "w2"}
    assert index.select(parse_selector("has(env)")) == set()
    assert index.select(parse_selector('app == "web"')) == set()

    index.remove("w2")
    index.remove("w2")  # unknown ids are ignored
    assert set(index.ids()) == {"w1"}
    assert index.select(parse_selector("all()")) == {"w1"}
    assert index.select(parse_selector('app != "x"')) == {"w1"}


def test_label_index_select_within() -> None:
    index = LabelIndex()
    for i in range(6):
        index.set(f"w{i}", {"n": str(i % 2)})
    within = {"w0", "w1", "w2", "ghost"}
    assert index.select(parse_selector('n == "0"'), within) == {"w0", "w2"}
    assert index.select(parse_selector('n != "0"'), within) == {"w1"}
    assert index.select(parse_selector("all()"), within) == {"w0", "w1", "w2"}
    assert index.select(parse_selector("!all()"), within) == set()
    assert index.select(parse_selector("all()"), set()) == set()


def test_select_returns_a_fresh_set() -> None:
    index = LabelIndex()
    index.set("w1", {"a": "1"})
    for text in ['a == "1"', "has(a)", "all()", 'a in {"1"}']:
        picked = index.select(parse_selector(text))
        picked.add("junk")
        assert index.select(parse_selector(text)) == {"w1"}


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(WIDS), label_sets), selectors, scopes)
def test_select_agrees_with_brute_force(
    workloads: dict[str, dict[str, str]], selector: Selector, within: frozenset[str] | None
) -> None:
    index = LabelIndex()
    for wid, labels in workloads.items():
        index.set(wid, labels)
    assert index.select(selector, within) == brute(selector, workloads, within)
    assert index.select(selector) == brute(selector, workloads, None)


# --- SelectorIndex -----------------------------------------------------------------------


def test_selector_index_basics() -> None:
    index = SelectorIndex()
    index.add_selector("web", parse_selector('app == "web"'))
    index.add_selector("everything", parse_selector("all()"))
    assert index.set_workload("w1", {"app": "web"}) == {"web", "everything"}
    assert index.set_workload("w2", {"app": "db"}) == {"everything"}
    assert index.matches("web") == {"w1"}
    assert index.selectors_for("w1") == {"web", "everything"}
    assert index.selectors_for("nobody") == set()
    assert index.selectors_by_workload() == {"w1": {"web", "everything"}, "w2": {"everything"}}

    assert index.set_workload("w2", {"app": "web"}) == {"web"}
    assert index.set_workload("w2", {"app": "web"}) == set()  # no change
    assert index.set_workload("w2", {"app": "web", "x": "y"}) == set()
    assert index.matches("web") == {"w1", "w2"}

    assert index.remove_workload("w1") == {"web", "everything"}
    assert index.remove_workload("w1") == set()
    assert index.matches("web") == {"w2"}

    index.remove_selector("web")
    index.remove_selector("web")  # unknown ids are ignored
    with pytest.raises(KeyError):
        index.matches("web")
    assert index.selectors_for("w2") == {"everything"}


def test_adding_a_selector_again_replaces_it() -> None:
    index = SelectorIndex()
    index.set_workload("w1", {"app": "web"})
    index.set_workload("w2", {"app": "db"})
    index.add_selector("s", parse_selector('app == "web"'))
    index.add_selector("s", parse_selector('app == "db"'))
    assert index.matches("s") == {"w2"}
    assert index.set_workload("w1", {"app": "cache"}) == set()  # no stale key registration
    index.add_selector("s", parse_selector("all()"), within={"w1"})
    assert index.matches("s") == {"w1"}


def test_scope_covers_workloads_added_later() -> None:
    index = SelectorIndex()
    index.add_selector("s", parse_selector("has(app)"), within=frozenset({"w1", "w3"}))
    assert index.matches("s") == set()
    assert index.set_workload("w1", {"app": "web"}) == {"s"}
    assert index.set_workload("w2", {"app": "web"}) == set()
    assert index.set_workload("w3", {"app": "db"}) == {"s"}
    assert index.matches("s") == {"w1", "w3"}


def test_label_change_reevaluates_only_selectors_mentioning_changed_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    index = SelectorIndex()
    index.set_workload("w1", {"app": "web", "env": "prod"})
    index.add_selector("app", parse_selector('app == "web"'))
    index.add_selector("not-app", parse_selector('!(app in {"db"})'))
    index.add_selector("env", parse_selector('env == "prod"'))
    index.add_selector("owner", parse_selector("!has(owner)"))
    index.add_selector("all", parse_selector("all()"))

    evaluated: list[str] = []
    original = Selector.matches

    def spy(self: Selector, labels: Mapping[str, str]) -> bool:
        evaluated.append(self.canonical())
        return original(self, labels)

    monkeypatch.setattr(Selector, "matches", spy)

    assert index.set_workload("w1", {"app": "db", "env": "prod"}) == {"app", "not-app"}
    assert sorted(evaluated) == ['!(app in {"db"})', 'app == "web"']
    evaluated.clear()
    assert index.set_workload("w1", {"app": "db", "env": "prod", "owner": "x"}) == {"owner"}
    assert evaluated == ["!has(owner)"]
    evaluated.clear()
    assert index.set_workload("w1", {"app": "db", "env": "prod", "owner": "x"}) == set()
    assert index.set_workload("w1", {"app": "db", "env": "prod", "zone": "z"}) == {"owner"}
    assert evaluated == ["!has(owner)"]
    evaluated.clear()
    index.set_workload("w2", {})  # a new workload meets every selector
    assert len(evaluated) == 5


class IndexMachine(RuleBasedStateMachine):
    """Random sequences of changes, checked against brute force after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.index = SelectorIndex()
        self.workloads: dict[str, dict[str, str]] = {}
        self.selectors: dict[str, tuple[Selector, frozenset[str] | None]] = {}

    def expected(self) -> dict[str, set[str]]:
        return {
            sid: brute(selector, self.workloads, within)
            for sid, (selector, within) in self.selectors.items()
        }

    def changed_since(self, before: dict[str, set[str]]) -> set[str]:
        after = self.expected()
        return {sid for sid in after if before.get(sid) != after[sid]}

    @rule(wid=st.sampled_from(WIDS), labels=label_sets)
    def set_workload(self, wid: str, labels: dict[str, str]) -> None:
        before = self.expected()
        changed = self.index.set_workload(wid, labels)
        self.workloads[wid] = labels
        assert changed == self.changed_since(before)

    @rule(wid=st.sampled_from(WIDS))
    def remove_workload(self, wid: str) -> None:
        before = self.expected()
        changed = self.index.remove_workload(wid)
        self.workloads.pop(wid, None)
        assert changed == self.changed_since(before)

    @rule(sid=st.sampled_from(SIDS), selector=selectors, within=scopes)
    def add_selector(self, sid: str, selector: Selector, within: frozenset[str] | None) -> None:
        self.index.add_selector(sid, selector, within)
        self.selectors[sid] = (selector, within)

    @rule(sid=st.sampled_from(SIDS))
    def remove_selector(self, sid: str) -> None:
        self.index.remove_selector(sid)
        self.selectors.pop(sid, None)

    @invariant()
    def agrees_with_brute_force(self) -> None:
        expected = self.expected()
        for sid, (selector, within) in self.selectors.items():
            assert self.index.matches(sid) == expected[sid]
            assert self.index.labels.select(selector, within) == expected[sid]
        by_workload = {wid: {s for s, m in expected.items() if wid in m} for wid in self.workloads}
        for wid in WIDS:
            assert self.index.selectors_for(wid) == by_workload.get(wid, set())
        assert self.index.selectors_by_workload() == by_workload
        assert set(self.index.labels.ids()) == set(self.workloads)
        for wid, labels in self.workloads.items():
            assert self.index.labels.labels(wid) == labels


IndexMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=25)
TestIndexMachine = IndexMachine.TestCase


# --- scale -------------------------------------------------------------------------------


def fleet_selectors(rnd: random.Random, apps: list[str], count: int) -> list[Selector]:
    templates = [
        'app == "{app}" && env == "prod"',
        'tier in {{"web", "db"}} && hyperwall.io/tenant == "t{n}"',
        '!has(pci) && app != "{app}"',
        'env not in {{"dev"}} || app == "{app}"',
        'has(pci) && !(tier == "web") && hyperwall.io/tenant == "t{n}"',
    ]
    return [
        parse_selector(templates[i % len(templates)].format(app=rnd.choice(apps), n=i % 50))
        for i in range(count - 1)
    ] + [parse_selector("all()")]


def test_scale_ten_thousand_workloads_thousand_selectors() -> None:
    rnd = random.Random(7)
    apps = [f"app{i}" for i in range(200)]

    def labels(i: int) -> dict[str, str]:
        out = {
            "hyperwall.io/name": f"w{i}",
            "hyperwall.io/tenant": f"t{i % 50}",
            "app": rnd.choice(apps),
            "env": rnd.choice(["prod", "stage", "dev"]),
            "tier": rnd.choice(["web", "db", "cache"]),
        }
        if rnd.random() < 0.1:
            out["pci"] = "yes"
        return out

    index = SelectorIndex()
    fleet = {f"w{i}": labels(i) for i in range(10_000)}
    for wid, wl in fleet.items():
        index.set_workload(wid, wl)
    sels = fleet_selectors(rnd, apps, 1000)

    # Correctness at fleet scale only: speed is measured in benchmarks/, never asserted here.
    for n, selector in enumerate(sels):
        index.add_selector(f"s{n}", selector)

    for _ in range(200):
        wid = f"w{rnd.randrange(10_000)}"
        fleet[wid] = {**fleet[wid], "env": rnd.choice(["prod", "stage", "dev"])}
        index.set_workload(wid, fleet[wid])

    for n in rnd.sample(range(len(sels)), 20):
        assert index.matches(f"s{n}") == brute(sels[n], fleet, None)
