"""A logged packet as a flow record: the rule id from the prefix (cut ones through the
rule numbers of this program or the previous one), the enforcing end by interface or by
address, the packet's fields."""

from __future__ import annotations

import struct

from hyperwall.compiler.program import Chain, Endpoint, HostProgram, MatchRule
from hyperwall.compiler.rule_numbers import log_prefix
from hyperwall.dataplane.nflog.decisions import Attributor
from hyperwall.dataplane.nflog.messages import LogMessage
from tests.dataplane.nflog.test_packet import ipv4, ipv6

LONG = "t" * 63 + "/" + "p" * 63 + "/" + "r" * 63


def _endpoint(name: str, ip: str, v6: str) -> Endpoint:
    return Endpoint(
        f"acme/{name}/eth0", f"acme/{name}", "eth0", "acme", "52:54:00:00:00:01",
        (ip, v6), (), (), "drop", True,
    )  # fmt: skip


def _program(rule: str) -> HostProgram:
    item = MatchRule(rule, "drop", True, None, None, None)
    chains = {"in:acme/p": Chain("in:acme/p", (item,))}
    eps = {
        "acme/web-1/eth0": _endpoint("web-1", "10.0.0.1", "fd00::1"),
        "acme/db-1/eth0": _endpoint("db-1", "10.0.0.2", "fd00::2"),
    }
    return HostProgram("hv1", {}, {}, chains, eps)


IFNAMES = {1: "vm-web", 2: "vm-db", 3: "eth9"}


def _ifname(ep: Endpoint) -> str:
    return "vm-web" if ep.workload == "acme/web-1" else "vm-db"


def _message(prefix: str, payload: bytes, indev: int | None, outdev: int | None) -> LogMessage:
    return LogMessage(100, 2, prefix, indev=indev, outdev=outdev, payload=payload)


def test_a_logged_tcp_drop_at_the_receiver() -> None:
    at = Attributor(_program("acme/p/deny"), _ifname)
    tcp = ipv4(6, struct.pack("!HH", 40312, 5432) + bytes(16))
    message = _message(log_prefix("acme/p/deny", "drop", "in"), tcp, 1, 2)
    record = at.record(message, IFNAMES.get, "hv1", 77)
    assert record is not None
    assert (record.time, record.host, record.workload, record.direction) == (
        77,
        "hv1",
        "acme/db-1",
        "in",
    )
    assert (record.action, record.rule, record.proto, record.sport, record.dport) == (
        "drop", "acme/p/deny", "tcp", 40312, 5432
    )  # fmt: skip
    assert record.icmp_type is None
    stamped = at.record(
        LogMessage(100, 2, message.prefix, timestamp_us=5, outdev=2), IFNAMES.get, "hv1", 77
    )
    assert stamped is not None and stamped.time == 5 and stamped.src is None


def test_icmpv6_at_the_sender_and_by_address_when_the_interface_is_unknown() -> None:
    at = Attributor(_program("acme/p/deny"), _ifname)
    echo = ipv6(58, bytes([128, 0, 0, 0]))
    record = at.record(
        _message(log_prefix("default", "drop", "out"), echo, 3, 1), IFNAMES.get, "hv1", 1
    )
    assert record is not None
    assert (record.workload, record.rule, record.proto) == ("acme/web-1", "default", "icmpv6")
    assert (record.icmp_type, record.icmp_code, record.sport) == (128, 0, None)


def test_anti_spoofing_is_attributed_by_interface_only() -> None:
    at = Attributor(_program("acme/p/deny"), _ifname)
    spoofed = ipv4(17, struct.pack("!HHHH", 1, 2, 8, 0), src="10.0.0.2")  # db-1's address
    prefix = log_prefix("anti-spoofing", "drop", "out")
    by_port = at.record(_message(prefix, spoofed, 1, 3), IFNAMES.get, "hv1", 1)
    assert by_port is not None and by_port.workload == "acme/web-1"
    nowhere = at.record(_message(prefix, spoofed, 3, None), IFNAMES.get, "hv1", 1)
    assert nowhere is not None and nowhere.workload is None  # not db-1: its address was forged
    unknown = log_prefix("unknown-interface", "drop", "out")
    stray = at.record(_message(unknown, spoofed, 3, None), IFNAMES.get, "hv1", 1)
    assert stray is not None and stray.workload is None  # eth9 is no workload's interface


def test_long_rule_ids_map_through_this_and_the_previous_program() -> None:
    old = Attributor(_program(LONG), _ifname)
    new = Attributor(_program("acme/p/other"), _ifname, previous=old)
    message = _message(log_prefix(LONG, "drop", "in"), b"", None, 2)
    third = Attributor(_program("acme/p/third"), _ifname, previous=new)  # before `new` maps
    assert third.record(message, IFNAMES.get, "hv1", 1).rule is None  # type: ignore[union-attr]
    new = Attributor(_program("acme/p/other"), _ifname, previous=old)
    record = new.record(message, IFNAMES.get, "hv1", 1)
    assert record is not None and record.rule == LONG  # logged under the old program
    third = Attributor(_program("acme/p/third"), _ifname, previous=new)
    assert third.record(message, IFNAMES.get, "hv1", 1).rule is None  # type: ignore[union-attr]
    fresh = Attributor(_program("acme/p/other"), _ifname)
    unmapped = fresh.record(message, IFNAMES.get, "hv1", 1)
    assert unmapped is not None and unmapped.rule is None


def test_a_foreign_prefix_is_not_a_record() -> None:
    at = Attributor(_program("acme/p/deny"), _ifname)
    assert at.record(_message("someone else", b"", 1, 2), IFNAMES.get, "hv1", 1) is None
