"""`agent.hits`: totals from successive kernel readings against a reference model (the true
increments, with counter resets), last-hit times, and the file a restarted agent resumes
from."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from hyperwall.agent.hits import HitTracker, RuleHits, load_tracker, read_report, save_tracker
from hyperwall.dataplane.nft.hits import Hits

KEYS = frozenset({"a", "b"})
# one period: for each rule, the connections of that period and whether its counter was
# reset (its chain rendered again) before them
periods = st.lists(
    st.fixed_dictionaries(
        {
            "a": st.tuples(st.integers(0, 5), st.booleans()),
            "b": st.tuples(st.integers(0, 5), st.booleans()),
        }
    ),
    max_size=12,
)


@given(periods)
def test_totals_and_last_hits_follow_the_true_increments(
    steps: list[dict[str, tuple[int, bool]]],
) -> None:
    tracker = HitTracker()
    kernel = {"a": 0, "b": 0}
    true_total = {"a": 0, "b": 0}
    last_hit: dict[str, float | None] = {"a": None, "b": None}
    for now, step in enumerate(steps, start=1):
        for key, (added, reset) in step.items():
            if reset and kernel[key] > added:  # a reset shows as a counter that went down
                kernel[key] = 0
            elif reset:
                continue  # (a reset hidden by as many new hits cannot be seen: not modelled)
            kernel[key] += added
            true_total[key] += added
            if added:
                last_hit[key] = float(now)
        reading = {f"c-{k}": (k, Hits(v, 100 * v)) for k, v in kernel.items() if v}
        tracker.update(float(now), reading, KEYS)
        for key in kernel:
            got = tracker.rules.get(key, RuleHits(0, 0, None))
            assert (got.packets, got.bytes, got.last_hit) == (
                true_total[key],
                100 * true_total[key],
                last_hit[key],
            )


def test_rules_leaving_the_program_are_forgotten() -> None:
    tracker = HitTracker()
    tracker.update(1.0, {"x": ("a", Hits(1, 10)), "y": ("b", Hits(2, 20))}, {"a", "b"})
    tracker.update(2.0, {"x": ("a", Hits(1, 10))}, {"a"})
    assert set(tracker.rules) == {"a"}
    assert tracker.report() == {"a": {"packets": 1, "bytes": 10, "lastHit": 1.0}}


def test_each_counter_is_followed_on_its_own() -> None:
    """A rule counted by two elements: one deleted (its hits stay in the total), the other
    re-added (reset to 0, then hit once): no hit is counted twice or lost."""
    tracker = HitTracker()
    tracker.update(1.0, {"e1": ("r", Hits(3, 30)), "e2": ("r", Hits(2, 20))}, {"r"})
    tracker.update(2.0, {"e2": ("r", Hits(1, 10))}, {"r"})  # e1 gone, e2 reset and hit
    assert tracker.rules["r"].packets == 3 + 2 + 1
    tracker.update(3.0, {"e2": ("r", Hits(1, 10))}, {"r"})  # nothing new
    assert (tracker.rules["r"].packets, tracker.rules["r"].last_hit) == (6, 2.0)


def test_a_restarted_agent_adds_only_what_came_after(tmp_path: Path) -> None:
    path = tmp_path / "hits.json"
    tracker = HitTracker()
    tracker.update(1.0, {"c": ("a", Hits(3, 30))}, {"a", "never"})
    save_tracker(path, tracker, 1.0)
    again = load_tracker(path)
    again.update(2.0, {"c": ("a", Hits(4, 40))}, {"a", "never"})
    assert again.report() == {"a": {"packets": 4, "bytes": 40, "lastHit": 2.0}}
    assert read_report(path) == (1.0, {"a": {"packets": 3, "bytes": 30, "lastHit": 1.0}})


def test_a_missing_or_broken_file_is_an_empty_start(tmp_path: Path) -> None:
    assert load_tracker(tmp_path / "none.json").rules == {}
    (tmp_path / "bad.json").write_text("{")
    assert load_tracker(tmp_path / "bad.json").rules == {}
    assert read_report(tmp_path / "bad.json") == (None, {})
