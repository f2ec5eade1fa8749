"""The agent's flow log, without the kernel: a batch of messages becomes records (foreign
prefixes and unmappable rules counted), a program change keeps the previous program's
numbers, counter readings become one summary record per rule, and the counts reach the
status file and the metrics' counts."""

from __future__ import annotations

import struct
from pathlib import Path

from hyperwall.agent.flowlog import FlowLog, read_flowlog_status
from hyperwall.agent.metrics import FlowCounts
from hyperwall.compiler.program import HostProgram
from hyperwall.compiler.rule_numbers import log_prefix
from hyperwall.dataplane.nflog.messages import LogMessage
from hyperwall.dataplane.nft.render import Options
from hyperwall.flows.record import FlowRecord
from tests.dataplane.nflog.test_decisions import LONG, _program
from tests.dataplane.nflog.test_packet import ipv4


def _flowlog(programs: list[HostProgram], tmp_path: Path, counts: FlowCounts) -> FlowLog:
    options = Options(ifname_of=lambda ep: "vm-web" if ep.workload == "acme/web-1" else "vm-db")
    return FlowLog(
        "hv1", lambda: programs[-1], options, lambda _: None, tmp_path / "s.json", counts=counts
    )


def test_messages_become_records_across_a_program_change(tmp_path: Path) -> None:
    programs = [_program(LONG)]
    flowlog = _flowlog(programs, tmp_path, FlowCounts())
    tcp = ipv4(6, struct.pack("!HH", 1000, 22) + bytes(16), dst="10.0.0.2")
    long_drop = LogMessage(100, 2, log_prefix(LONG, "drop", "in"), payload=tcp)
    foreign = LogMessage(100, 2, "not ours", payload=tcp)
    first = flowlog.records([long_drop, foreign], 5)
    assert [(r.rule, r.workload, r.dport) for r in first] == [(LONG, "acme/db-1", 22)]
    programs.append(_program("acme/p/new"))  # the long rule is gone from the new program
    assert [r.rule for r in flowlog.records([long_drop], 6)] == [LONG]  # one program back
    programs.append(_program("acme/p/newer"))
    assert [r.rule for r in flowlog.records([long_drop], 7)] == [None]
    assert (flowlog.stats.foreign, flowlog.stats.unmapped) == (1, 1)


def test_readings_become_summaries_status_and_counts(tmp_path: Path) -> None:
    counts = FlowCounts()
    flowlog = _flowlog([_program(LONG)], tmp_path, counts)
    prefix = log_prefix(LONG, "drop", "in")
    assert flowlog.summarize({("l_x", prefix): (10, 4)}, 1) == []  # the start
    got = flowlog.summarize({("l_x", prefix): (100, 54), ("l_y", "someone's"): (9, 1)}, 2)
    assert got == [
        FlowRecord(time=2, host="hv1", direction="in", action="drop", rule=LONG,
                   kind="suppressed", suppressed=40)
    ]  # fmt: skip
    assert counts.suppressed == 40
    flowlog.save_status()
    status = read_flowlog_status(tmp_path / "s.json")
    assert status is not None and status["suppressed"] == 40 and status["by_rule"] == {LONG: 40}
    assert read_flowlog_status(tmp_path / "missing.json") is None
