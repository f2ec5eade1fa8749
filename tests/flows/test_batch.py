"""What the manager requires of a shipped record."""

from __future__ import annotations

from hyperwall.flows.batch import record_problem

GOOD = {"time": "2026-12-03T07:00:00.1Z", "host": "hv1", "workload": "acme/a", "rule": "r"}


def test_a_good_record() -> None:
    assert record_problem(GOOD, "hv1") is None
    assert record_problem({"time": "2026-12-03T07:00:00Z"}, "hv1") is None


def test_problems_name_the_field() -> None:
    assert record_problem([], "hv1") == ("", "a record is a JSON object")
    assert record_problem({**GOOD, "time": 5}, "hv1")[0] == "time"  # type: ignore[index]
    assert record_problem({**GOOD, "time": "noon"}, "hv1")[0] == "time"  # type: ignore[index]
    assert record_problem(GOOD, "hv2")[0] == "host"  # type: ignore[index]
    assert record_problem({**GOOD, "rule": 7}, "hv1") == ("rule", "not a string")
