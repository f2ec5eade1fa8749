"""One flow record as one line of text, for `hyperwall logs` and `hyperwall lab logs`. Pure.

`2026-12-03T07:00:00.123Z hv2 acme/db-1 in drop acme/pci-guard/deny-rest
tcp 10.1.0.21:40312 -> 10.1.0.41:5432` — time (milliseconds), host, workload (`-` when
none), direction, action, rule, then what the record says of the packet: protocol and
addresses with ports (TCP/UDP) or ICMP type/code, a connection record's packets and bytes
both ways, a suppression summary's count. Fields a record lacks are left out; strings from
records are printed as they are (the CLI escapes markup itself).
"""

from __future__ import annotations

from collections.abc import Mapping


def _str(value: object, default: str = "-") -> str:
    return default if value is None or value == "" else str(value)


def _endpoint(address: object, port: object) -> str:
    text = _str(address, "?")
    if port is None:
        return text
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


def record_line(record: Mapping[str, object]) -> str:
    when = _str(record.get("time"))
    if len(when) == len("2026-12-03T07:00:00.123456Z") and when.endswith("Z"):
        when = when[:-4] + "Z"  # milliseconds are enough to read
    parts = [
        when,
        _str(record.get("host")),
        _str(record.get("workload")),
        _str(record.get("direction")),
        _str(record.get("action")),
        _str(record.get("rule")),
    ]
    if record.get("kind") == "suppressed":
        parts.append(f"suppressed {_str(record.get('suppressed'), '0')}")
        return " ".join(parts)
    if record.get("proto") is not None:
        parts.append(_str(record.get("proto")))
    if record.get("src") is not None or record.get("dst") is not None:
        src = _endpoint(record.get("src"), record.get("sport"))
        dst = _endpoint(record.get("dst"), record.get("dport"))
        parts.append(f"{src} -> {dst}")
    if record.get("icmpType") is not None:
        parts.append(f"type {record['icmpType']} code {_str(record.get('icmpCode'), '0')}")
    if record.get("kind") == "connection":
        sent = f"{_str(record.get('srcPackets'), '0')}p/{_str(record.get('srcBytes'), '0')}B"
        back = f"{_str(record.get('dstPackets'), '0')}p/{_str(record.get('dstBytes'), '0')}B"
        parts.append(f"out {sent} back {back}")
        if record.get("end") is not None:
            parts.append(f"ended {record['end']}")
    return " ".join(parts)
