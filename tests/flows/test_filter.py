"""The flow filter: tenant, workload, rule prefixes, action and time bounds."""

from __future__ import annotations

import pytest

from hyperwall.flows.filter import (
    FlowFilter,
    parse_when,
    tenant_of,
    time_us,
    us_time,
)

RECORD = {
    "time": "2026-12-03T07:00:00.123456Z",
    "host": "hv1",
    "workload": "acme/db-1",
    "direction": "in",
    "action": "drop",
    "rule": "acme/pci-guard/deny-rest",
}


def test_tenant_of() -> None:
    assert tenant_of("acme/db-1") == "acme"
    assert tenant_of("dns-1") is None
    assert tenant_of(None) is None


def test_time_round_trip() -> None:
    us = time_us(RECORD["time"])
    assert us % 1_000_000 == 123456
    assert us_time(us) == RECORD["time"]
    assert time_us("2026-12-03T08:00:00.123456+01:00") == us
    assert time_us("2026-12-03T07:00:00.123456") == us  # no zone: UTC


def test_parse_when() -> None:
    now = 10_000_000_000
    assert parse_when("10m", now) == now - 600_000_000
    assert parse_when("1.5h", now) == now - 5_400_000_000
    assert parse_when("2d", now) == now - 2 * 86400 * 1_000_000
    assert parse_when("2026-12-03T07:00:00.123456Z", now) == time_us(RECORD["time"])
    with pytest.raises(ValueError, match="'10 parsecs'"):
        parse_when("10 parsecs", now)


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (FlowFilter(), True),
        (FlowFilter(tenant="acme"), True),
        (FlowFilter(tenant="globex"), False),
        (FlowFilter(tenant="-"), False),
        (FlowFilter(workload="acme/db-1"), True),
        (FlowFilter(workload="db-1"), True),
        (FlowFilter(workload="db"), False),
        (FlowFilter(workload="globex/db-1"), False),
        (FlowFilter(rule="acme/pci-guard/deny-rest"), True),
        (FlowFilter(rule="acme/pci-guard"), True),
        (FlowFilter(rule="acme"), True),
        (FlowFilter(rule="acme/pci"), False),
        (FlowFilter(action="drop"), True),
        (FlowFilter(action="allow"), False),
        (FlowFilter(since=time_us(RECORD["time"])), True),
        (FlowFilter(since=time_us(RECORD["time"]) + 1), False),
        (FlowFilter(until=time_us(RECORD["time"])), False),
        (FlowFilter(until=time_us(RECORD["time"]) + 1), True),
    ],
)
def test_matches(flt: FlowFilter, expected: bool) -> None:
    assert flt.matches(RECORD) is expected


def test_provider_records() -> None:
    provider = {**RECORD, "workload": "dns-1", "rule": "default"}
    assert FlowFilter(tenant="-").matches(provider)
    assert not FlowFilter(tenant="acme").matches(provider)
    assert FlowFilter(workload="dns-1").matches(provider)
    unknown = {"time": RECORD["time"], "action": "drop", "rule": "unknown-interface"}
    assert FlowFilter(tenant="-").matches(unknown)
    assert not FlowFilter(workload="dns-1").matches(unknown)


def test_within_tenant() -> None:
    assert FlowFilter(rule="x").within_tenant("acme") == FlowFilter(tenant="acme", rule="x")
    assert FlowFilter(tenant="acme").within_tenant("acme") == FlowFilter(tenant="acme")
    assert FlowFilter(tenant="globex").within_tenant("acme") is None
    assert FlowFilter(tenant="-").within_tenant("acme") is None


def test_bad_time_in_a_record_is_not_matched_by_a_time_bound() -> None:
    assert not FlowFilter(since=0).matches({**RECORD, "time": "yesterday"})
    assert FlowFilter().matches({**RECORD, "time": "yesterday"})
