"""Flow records as text lines."""

from __future__ import annotations

from hyperwall.flows.text import record_line

BASE = {
    "time": "2026-12-03T07:00:00.123456Z",
    "host": "hv2",
    "workload": "acme/db-1",
    "direction": "in",
    "action": "drop",
    "rule": "acme/pci-guard/deny-rest",
}


def test_tcp() -> None:
    record = {
        **BASE,
        "src": "10.1.0.21",
        "dst": "10.1.0.41",
        "proto": "tcp",
        "sport": 40312,
        "dport": 5432,
    }
    assert record_line(record) == (
        "2026-12-03T07:00:00.123Z hv2 acme/db-1 in drop acme/pci-guard/deny-rest"
        " tcp 10.1.0.21:40312 -> 10.1.0.41:5432"
    )


def test_icmpv6_and_no_workload() -> None:
    record = {
        **BASE,
        "workload": None,
        "rule": "unknown-interface",
        "src": "fd00::1",
        "dst": "fd00::2",
        "proto": "icmpv6",
        "icmpType": 128,
        "icmpCode": 0,
    }
    assert record_line(record).endswith(
        "hv2 - in drop unknown-interface icmpv6 fd00::1 -> fd00::2 type 128 code 0"
    )


def test_ipv6_ports_are_bracketed() -> None:
    record = {**BASE, "src": "fd00::1", "dst": "fd00::2", "proto": "udp", "sport": 1, "dport": 53}
    assert "[fd00::1]:1 -> [fd00::2]:53" in record_line(record)


def test_connection_and_suppressed() -> None:
    conn = {
        **BASE,
        "action": "allow",
        "kind": "connection",
        "proto": "tcp",
        "src": "a",
        "dst": "b",
        "srcPackets": 3,
        "srcBytes": 180,
        "dstPackets": 2,
        "dstBytes": 120,
        "end": "2026-12-03T07:00:01Z",
    }
    assert record_line(conn).endswith("out 3p/180B back 2p/120B ended 2026-12-03T07:00:01Z")
    summary = {**BASE, "kind": "suppressed", "suppressed": 41}
    assert record_line(summary).endswith("acme/pci-guard/deny-rest suppressed 41")
