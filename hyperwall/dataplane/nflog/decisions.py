"""A logged packet as a flow record: which rule, which workload's end, which packet. Pure.

Counterpart of `nflog.messages` (the message), `compiler.rule_numbers` (the prefix the
log rule carries: number, action, direction, rule id) and `agent.flowlog` (which reads the
messages, names the interfaces and writes the records). The enforcing end is the
workload whose interface the packet came from (`out`: the sender's end; the bridge port
if br_netfilter gave one) or goes to (`in`); if that interface is not one of the
program's (a bridge where only the address tells, a VM being set up), the
workload that owns the packet's source (`out`) or destination (`in`) address, except for
an anti-spoofing drop (its source address is by definition not its sender's) and an
`unknown-interface` drop (no workload: the interface is not one of the program's).

`Attributor` is built once per program: endpoints by interface name and by address, and
(only when a prefix carries a cut rule id) the program's rule-number table merged with the
previous program's, so a packet logged just before a change still maps right
(`rule_numbers` module docstring). It remembers each prefix text's parts and rule id (at
most `_CACHED`; a flood repeats a few prefixes), so a record costs no prefix parsing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from hyperwall.compiler.program import Endpoint, HostProgram
from hyperwall.compiler.rule_numbers import (
    ANTI_SPOOFING,
    UNKNOWN_INTERFACE,
    LogPrefix,
    RuleNumbers,
    parse_log_prefix,
)
from hyperwall.dataplane.nflog.messages import LogMessage
from hyperwall.dataplane.nflog.packet import parse_headers
from hyperwall.flows.record import PROTO_NAMES, FlowRecord

Names = Callable[[int], str | None]  # interface index -> name
# drops whose addresses say nothing of the sender: forged, or from an interface we do not know
_BY_INTERFACE_ONLY = frozenset({ANTI_SPOOFING, UNKNOWN_INTERFACE})
_CACHED = 4096  # prefixes remembered per program (a host has few; a flood repeats them)


def _ip_key(text: str) -> str:
    return str(ipaddress.ip_address(text))


class Attributor:
    """The lookups of one program (and the rule numbers of the one before it)."""

    def __init__(
        self,
        program: HostProgram,
        ifname: Callable[[Endpoint], str],
        previous: Attributor | None = None,
    ) -> None:
        self.program = program
        self.by_ifname: dict[str, Endpoint] = {}
        self.by_address: dict[str, Endpoint] = {}
        for ep in program.endpoints.values():
            self.by_ifname[ifname(ep)] = ep
            for ip in ep.ips:
                self.by_address[_ip_key(ip)] = ep
        if previous is not None:
            previous.forget_previous()  # one program back, never a chain of them
        self._previous: Attributor | None = previous
        self._own: RuleNumbers | None = None
        self._numbers: RuleNumbers | None = None
        self._rules: dict[str, tuple[LogPrefix, str | None] | None] = {}

    def forget_previous(self) -> None:
        self._previous = None

    def own_numbers(self) -> RuleNumbers:
        """This program's rule numbers alone (made once)."""
        if self._own is None:
            self._own = RuleNumbers.of_program(self.program)
        return self._own

    def numbers(self) -> RuleNumbers:
        """This program's rule numbers merged with the previous program's own (made once,
        on the first cut prefix): never more than two programs' worth."""
        if self._numbers is None:
            own = self.own_numbers()
            before = self._previous
            self._numbers = own.merged(before.own_numbers()) if before is not None else own
            self._previous = None  # merged: the previous program can go
        return self._numbers

    def _rule(self, prefix_text: str) -> tuple[LogPrefix, str | None] | None:
        """The prefix's parts and rule id (made once per prefix text)."""
        if prefix_text in self._rules:
            return self._rules[prefix_text]
        prefix = parse_log_prefix(prefix_text)
        entry = None
        if prefix is not None:
            rule = prefix.rule_id() if prefix.complete else prefix.rule_id(self.numbers())
            entry = (prefix, rule)
        if len(self._rules) >= _CACHED:
            self._rules.clear()
        self._rules[prefix_text] = entry
        return entry

    def record(
        self, message: LogMessage, names: Names, host: str, now_us: int
    ) -> FlowRecord | None:
        """The record of `message`; None if its prefix is not one of ours."""
        entry = self._rule(message.prefix)
        if entry is None:
            return None
        prefix, rule = entry
        headers = parse_headers(message.payload)
        outbound = prefix.direction == "out"
        index = (
            (message.physindev or message.indev)
            if outbound
            else (message.physoutdev or message.outdev)
        )
        ep = None
        if index is not None:
            name = names(index)
            ep = self.by_ifname.get(name) if name is not None else None
        if ep is None and headers is not None and rule not in _BY_INTERFACE_ONLY:
            ep = self.by_address.get(_ip_key(headers.src if outbound else headers.dst))
        when = message.timestamp_us if message.timestamp_us is not None else now_us
        workload = ep.workload if ep is not None else None
        if headers is None:
            return FlowRecord(when, host, workload, prefix.direction, prefix.action, rule)
        _family, src, dst, proto, sport, dport, icmp_type, icmp_code = headers
        # ports only for TCP/UDP, type/code only for ICMP: `parse_headers` fills no other
        return FlowRecord(
            when, host, workload, prefix.direction, prefix.action, rule, src, dst,
            PROTO_NAMES.get(proto, proto), sport, dport, icmp_type, icmp_code,
        )  # fmt: skip
