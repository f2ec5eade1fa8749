"""The manager's flow database: its SQL selects exactly what `FlowFilter.matches` accepts
(hypothesis, against the pure predicate as the reference), batches are stored once, follow
cursors see every record once, and retention by age and by size."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperwall.flows.filter import FlowFilter, us_time
from hyperwall.manager import flow_db

T0 = 1_796_000_000_000_000  # µs, December 2026
WORKLOADS = ["acme/db-1", "acme/web-1", "globex/db-1", "db-1", "dns-1", None, "acme/db-10"]
RULES = ["acme/p/r1", "acme/p/r2", "acme/pq/r", "acme/p", "default", "anti-spoofing", "a%_\\/x"]
ACTIONS = ["drop", "allow", "reject"]


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = flow_db.connect(str(tmp_path / "flows.db"))
    yield c
    c.close()


def record(t: int, workload: str | None, rule: str, action: str, **extra: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"time": us_time(t), "host": "hv1", "rule": rule, "action": action}
    if workload is not None:
        r["workload"] = workload
    return {**r, **extra}


records = st.lists(
    st.builds(
        record,
        st.integers(T0, T0 + 10_000),
        st.sampled_from(WORKLOADS),
        st.sampled_from(RULES),
        st.sampled_from(ACTIONS),
    ),
    max_size=40,
)
filters = st.builds(
    FlowFilter,
    tenant=st.sampled_from([None, "acme", "globex", "-"]),
    workload=st.sampled_from([None, "acme/db-1", "db-1", "db", "dns-1", "globex/db-1"]),
    rule=st.sampled_from([None, "acme", "acme/p", "acme/p/r1", "a%_\\", "a%_\\/x", "default"]),
    action=st.sampled_from([None, *ACTIONS]),
    since=st.one_of(st.none(), st.integers(T0, T0 + 10_000)),
    until=st.one_of(st.none(), st.integers(T0, T0 + 10_000)),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=records, flt=filters, limit=st.integers(1, 50))
def test_sql_selects_what_the_filter_accepts(
    conn: sqlite3.Connection, batch: list[dict[str, Any]], flt: FlowFilter, limit: int
) -> None:
    conn.execute("DELETE FROM flows")
    conn.execute("DELETE FROM flow_positions")
    flow_db.store_batch(conn, "hv1", "f", 0, 1, batch)
    expected = [r for r in batch if flt.matches(r)]
    page = flow_db.query(conn, flt, 10_000, None)
    assert sorted(map(repr, page.records)) == sorted(map(repr, expected))
    assert [r["time"] for r in page.records] == sorted(r["time"] for r in expected)
    newest = flow_db.query(conn, flt, limit, None).records  # the newest `limit`, oldest first
    assert [r["time"] for r in newest] == sorted(r["time"] for r in expected)[-limit:][
        : len(newest)
    ]
    assert len(newest) == min(limit, len(expected))


def test_a_replayed_batch_is_not_stored_again(conn: sqlite3.Connection) -> None:
    first = [record(T0 + i, "acme/db-1", "acme/p/r1", "drop") for i in range(3)]
    done = flow_db.store_batch(conn, "hv1", "A", 0, 300, first)
    assert done.stored == 3 and done.position == flow_db.Position("A", 300)
    # the agent crashed before saving its cursor: the same bytes again, maybe more of them
    again = flow_db.store_batch(conn, "hv1", "A", 0, 450, [*first, first[0]])
    assert again.stored == 0 and again.position == flow_db.Position("A", 300)
    # where the manager said to go on from
    more = flow_db.store_batch(conn, "hv1", "A", 300, 450, [first[0]])
    assert more.stored == 1
    # a new file; another host's positions are its own
    assert flow_db.store_batch(conn, "hv1", "B", 0, 10, [first[1]]).stored == 1
    assert flow_db.store_batch(conn, "hv2", "A", 0, 10, [first[1]]).stored == 1
    assert flow_db.count(conn) == 6
    assert flow_db.position(conn, "hv1") == flow_db.Position("B", 10)


def test_following_sees_every_record_once(conn: sqlite3.Connection) -> None:
    flt = FlowFilter(tenant="acme")
    start = flow_db.query(conn, flt, 10, None)
    assert start.records == [] and start.cursor == 0
    seen: list[dict[str, Any]] = []
    cursor = start.cursor
    for n in range(5):  # records arrive out of time order, some not for this filter
        batch = [record(T0 - n * 100 + i, w, "r", "drop") for i, w in enumerate(WORKLOADS)]
        flow_db.store_batch(conn, "hv1", "f", n, n + 1, batch)
        while True:
            page = flow_db.query(conn, flt, 2, cursor)
            seen += page.records
            if page.cursor == cursor:
                break
            cursor = page.cursor
    assert len(seen) == 5 * 3
    assert all(r["workload"].startswith("acme/") for r in seen)
    assert len({repr(r) for r in seen}) == len(seen)


def test_retention_by_age(conn: sqlite3.Connection) -> None:
    old = [record(T0 + i, "acme/db-1", "r", "drop", n=i) for i in range(10)]
    new = [record(T0 + 1_000_000 + i, "acme/db-1", "r", "drop", n=i) for i in range(10)]
    flow_db.store_batch(conn, "hv1", "f", 0, 1, [*new, *old])
    assert flow_db.expire(conn, T0 + 1_000_000, None) == 10
    left = flow_db.query(conn, FlowFilter(), 100, None).records
    assert left == new


def test_retention_by_size_keeps_the_newest(conn: sqlite3.Connection) -> None:
    pad = "x" * 200
    for b in range(20):
        batch = [record(T0 + b * 1000 + i, "acme/db-1", "r", "drop", pad=pad) for i in range(500)]
        flow_db.store_batch(conn, "hv1", "f", b, b + 1, batch)
    full = flow_db.used_bytes(conn)
    assert full > 2_000_000
    limit = 512 * 1024
    deleted = flow_db.expire(conn, None, limit)
    assert flow_db.used_bytes(conn) <= limit
    assert deleted > 0 and flow_db.count(conn) == 10_000 - deleted
    left = flow_db.query(conn, FlowFilter(), 10_000, None).records
    newest = us_time(T0 + 19 * 1000 + 499)
    assert left[-1]["time"] == newest  # the oldest went first
    oldest_left = left[0]["time"]
    assert all(r["time"] >= oldest_left for r in left)
    # the pages went back to the file system: the file shrank
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    assert pages * size < full
