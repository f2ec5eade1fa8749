"""Connection records from conntrack events: the bounded table of open managed connections,
and the record each one leaves when it ends. Pure (no socket, no clock of its own).

Counterpart of `dataplane.conntrack.events` (NEW/DESTROY as values), `nft.ct_mark` (the
mark the admitting rule set) and `agent.connection_log` (the thread that reads the events
and writes the records to the flow log with `flows.writer`).

- NEW with our mark: the connection is resolved now, while the program that admitted it is
  in force (rule, enforcing workload, direction) and kept by conntrack id (unique among
  live entries) with its start time. A NEW without our mark is not a managed VM's
  connection and is ignored.
- DESTROY: the entry leaves the table and becomes one record: start (the kernel's
  timestamp if on, else when the NEW was seen), end, packets and bytes both ways (the
  kernel's accounting: `nf_conntrack_acct`), the rule. A DESTROY whose NEW was not seen
  (the table was full, the socket overflowed, the agent started later) still gives a
  record if its mark is ours: resolved against the current program, counted as `unpaired`.
- The table holds at most `limit` connections: under a flood, a NEW that does not fit is
  counted (`dropped`) and forgotten, so memory stays bounded whatever the connection rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from hyperwall.compiler.program import Endpoint, HostProgram
from hyperwall.compiler.rule_numbers import RuleNumbers
from hyperwall.dataplane.conntrack.entry import ICMP_PROTOCOLS, PORT_PROTOCOLS, Tuple
from hyperwall.dataplane.conntrack.events import Event
from hyperwall.dataplane.nft import ct_mark
from hyperwall.evaluator.evaluate import evaluate_rules
from hyperwall.evaluator.packet import Packet
from hyperwall.flows.record import FlowRecord, proto_name

LIMIT = 65_536  # open connections remembered (~200 bytes each)


class ProgramIndex:
    """What resolving a mark needs of one program, looked up once per program: its rule
    numbers (`compiler.rule_numbers`) and which endpoint owns each address."""

    def __init__(self, program: HostProgram) -> None:
        self.program = program
        self.rules: Mapping[int, tuple[str, ...]] = RuleNumbers.of_program(program).ids
        self.owners: dict[str, Endpoint] = {
            ip: ep for ep in program.endpoints.values() for ip in ep.ips
        }


@dataclass(frozen=True, slots=True)
class Admitted:
    """Who admitted a connection: the rule, the enforcing end's workload, its side."""

    rule: str
    workload: str
    direction: str


@dataclass(frozen=True, slots=True)
class Open:
    admitted: Admitted
    start: float  # epoch seconds


def _packet(t: Tuple) -> Packet:
    if t.proto in ICMP_PROTOCOLS:
        return Packet(str(t.src), str(t.dst), t.proto, t.sport, t.icmp_type)
    return Packet(str(t.src), str(t.dst), t.proto, t.sport, t.dport)


def resolve(mark: int, orig: Tuple, index: ProgramIndex | None) -> Admitted | None:
    """The admitting rule of a connection with `mark` and original tuple `orig`, in the
    program of `index`; None if the mark is not ours or names nothing there (a connection
    of a VM that left). The evaluator picks the rule where the number alone does not say:
    in a folded block, or between rules whose numbers collide."""
    found = ct_mark.decode(mark)
    if found is None or index is None:
        return None
    direction = found.direction
    endpoint = index.owners.get(str(orig.dst if direction == "in" else orig.src))
    candidates = index.rules.get(found.number, ())
    if endpoint is None or not candidates:
        return None
    rule = candidates[0]
    if found.folded or len(candidates) > 1:
        side: Literal["in", "out"] = "in" if direction == "in" else "out"
        decision = evaluate_rules(index.program, endpoint, side, _packet(orig))
        if decision.verdict == "allow" and (found.folded or decision.rule in candidates):
            rule = decision.rule
    return Admitted(rule, endpoint.workload, direction)


class ConnectionTable:
    """Open managed connections by conntrack id, at most `limit`."""

    def __init__(self, host: str, limit: int = LIMIT) -> None:
        self.host = host
        self.limit = limit
        self.open: dict[int, Open] = {}
        self.dropped = 0  # NEW events not kept: the table was full
        self.unpaired = 0  # records made from a DESTROY alone

    def handle(self, event: Event, now: float, index: ProgramIndex | None) -> FlowRecord | None:
        """Take one event (`index`: of the program in force); the record of a connection
        that ended, if it is one of ours."""
        if event.kind == "new":
            if event.id in self.open:
                return None
            admitted = resolve(event.mark, event.orig, index)
            if admitted is None:
                return None
            if len(self.open) >= self.limit:
                self.dropped += 1
                return None
            start = event.start if event.start is not None else now
            self.open[event.id] = Open(admitted, start)
            return None
        known = self.open.pop(event.id, None)
        if known is None:
            admitted = resolve(event.mark, event.orig, index)
            if admitted is None:
                return None
            self.unpaired += 1
            known = Open(admitted, event.start if event.start is not None else now)
        return record(self.host, known, event, now)


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def record(host: str, known: Open, event: Event, now: float) -> FlowRecord:
    """The connection record of a DESTROY `event` of connection `known`."""
    t = event.orig
    ports = t.proto in PORT_PROTOCOLS
    icmp = t.proto in ICMP_PROTOCOLS
    end = event.stop if event.stop is not None else now
    orig, reply = event.orig_counters, event.reply_counters
    return FlowRecord(
        time=_us(end),
        host=host,
        workload=known.admitted.workload,
        direction=known.admitted.direction,
        action="allow",
        rule=known.admitted.rule,
        src=str(t.src),
        dst=str(t.dst),
        proto=proto_name(t.proto),
        sport=t.sport if ports else None,
        dport=t.dport if ports else None,
        icmp_type=t.icmp_type if icmp else None,
        icmp_code=t.icmp_code if icmp else None,
        kind="connection",
        start=_us(known.start),
        end=_us(end),
        src_packets=orig.packets if orig else None,
        src_bytes=orig.bytes if orig else None,
        dst_packets=reply.packets if reply else None,
        dst_bytes=reply.bytes if reply else None,
    )
