"""`agent.connections`: a managed connection's NEW then DESTROY gives one record naming the
rule `trace` names (a rule of its own, a folded one, the default), with start, end and the
counters both ways; an unmanaged connection gives none; the table stays within its limit
under a flood, counting what it drops; a DESTROY alone still gives a record."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperwall.agent.connections import ConnectionTable, ProgramIndex, resolve
from hyperwall.analysis.trace import trace
from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.program import HostProgram, LookupRule, MatchRule
from hyperwall.compiler.rule_numbers import rule_number
from hyperwall.dataplane.conntrack.entry import Tuple
from hyperwall.dataplane.conntrack.events import Counters, Event
from hyperwall.dataplane.nft import ct_mark
from hyperwall.io.files import load_catalog
from hyperwall.policy.model import Catalog

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


CATALOG = load_catalog([EXAMPLES])
_COMPILER = FleetCompiler(CATALOG.config, CATALOG.workloads.values())
PROGRAMS = {h: _COMPILER.host_program(h) for h in ("hv1", "hv2")}
PROGRAM = PROGRAMS["hv1"]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return CATALOG


@pytest.fixture(scope="module")
def programs() -> dict[str, HostProgram]:
    return PROGRAMS


def kernel_mark(program: HostProgram, rule: str, direction: str) -> int:
    """The mark the rendered table sets when `rule` admits at `direction` (`nft.ct_mark`)."""
    if rule == "default":
        return ct_mark.encode(rule_number("default"), direction)
    for chain in program.chains.values():
        for item in chain.items:
            if isinstance(item, MatchRule) and item.rule == rule:
                return ct_mark.encode(rule_number(rule), direction)
            if isinstance(item, LookupRule) and rule in item.rules:
                return ct_mark.encode(rule_number(item.rules[0]), direction, True)
    raise AssertionError(f"{rule} not in the program")


def tcp(src: str, dst: str, dport: int, sport: int = 40000) -> Tuple:
    return Tuple(ip_address(src), ip_address(dst), 6, sport, dport)


CASES = [  # (host, from, to, service, direction)
    ("hv1", "web-1", "app-1", "app-api", "in"),
    ("hv1", "jump-1", "web-2", "ssh", "out"),
    ("hv2", "jump-1", "web-2", "ssh", "in"),
    ("hv1", "lb-1", "web-2", "http", "out"),
    ("hv2", "app-1", "db-1", "postgres", "in"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(c))
def test_one_record_naming_the_rule_trace_names(
    catalog: Catalog,
    programs: dict[str, HostProgram],
    case: tuple[str, str, str, str, Literal["in", "out"]],
) -> None:
    host, src, dst, service, direction = case
    result = trace(catalog, src, dst, service)
    orig = tcp(result.packet.src, result.packet.dst, result.packet.dport, result.packet.sport)
    decision = result.ingress if direction == "in" else result.egress
    assert decision is not None and decision.verdict == "allow"
    program = programs[host]
    mark = kernel_mark(program, decision.rule, direction)
    table = ConnectionTable(host)
    index = ProgramIndex(program)
    assert table.handle(Event("new", 7, orig, mark, start=100.0), 100.5, index) is None
    assert len(table.open) == 1
    gone = Event("destroy", 7, orig, mark, Counters(5, 500), Counters(4, 4000), 100.0, 103.5)
    record = table.handle(gone, 104.0, index)
    assert record is not None and table.open == {}
    workload = (result.destination if direction == "in" else result.source).workload
    assert workload is not None
    assert record.to_json() == {
        "time": "1970-01-01T00:01:43.500000Z",
        "host": host,
        "workload": workload.key,
        "direction": direction,
        "action": "allow",
        "rule": decision.rule,
        "src": str(orig.src),
        "dst": str(orig.dst),
        "proto": "tcp",
        "sport": orig.sport,
        "dport": orig.dport,
        "kind": "connection",
        "start": "1970-01-01T00:01:40.000000Z",
        "end": "1970-01-01T00:01:43.500000Z",
        "srcPackets": 5,
        "srcBytes": 500,
        "dstPackets": 4,
        "dstBytes": 4000,
    }


def test_unmanaged_connections_leave_nothing(programs: dict[str, HostProgram]) -> None:
    program = programs["hv1"]
    index = ProgramIndex(program)
    table = ConnectionTable("hv1")
    orig = tcp("10.1.0.21", "10.1.0.31", 8000)
    for mark in (0, 0x1234, 0x80000000 | ct_mark.MANAGED):
        assert table.handle(Event("new", 1, orig, mark), 1.0, index) is None
        assert table.handle(Event("destroy", 1, orig, mark), 2.0, index) is None
    assert table.open == {} and table.unpaired == 0
    # our mark, but for an address that is no endpoint of this host
    stray = tcp("192.0.2.1", "192.0.2.2", 80)
    mark = ct_mark.encode(rule_number("default"), "in")
    assert resolve(mark, stray, index) is None


def test_a_destroy_without_its_new_still_records(programs: dict[str, HostProgram]) -> None:
    program = programs["hv1"]
    orig = tcp("10.1.0.21", "10.1.0.31", 8000)
    mark = kernel_mark(program, "acme/shop/web-to-app", "in")
    table = ConnectionTable("hv1")
    gone = Event("destroy", 9, orig, mark, Counters(1, 60), Counters(1, 60), 50.0, 51.0)
    record = table.handle(gone, 52.0, ProgramIndex(program))
    assert record is not None and record.rule == "acme/shop/web-to-app"
    assert (record.start, record.end, table.unpaired) == (50_000_000, 51_000_000, 1)


@given(st.integers(1, 50), st.integers(0, 200))
def test_the_table_never_holds_more_than_its_limit(limit: int, flood: int) -> None:
    program = PROGRAM
    index = ProgramIndex(program)
    table = ConnectionTable("hv1", limit)
    mark = kernel_mark(program, "acme/shop/web-to-app", "in")
    for i in range(flood):
        orig = tcp("10.1.0.21", "10.1.0.31", 8000, sport=1024 + i)
        table.handle(Event("new", i, orig, mark, start=1.0), 1.0, index)
        assert len(table.open) <= limit
    assert len(table.open) == min(limit, flood)
    assert table.dropped == max(0, flood - limit)
