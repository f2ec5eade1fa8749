"""Connection attempts from inside a namespace, classified by what came back.

Runs in the responder (in the VM's or the external namespace). Standard library only.
- `allowed`: TCP connected and one byte came back, a UDP reply came, an ICMP echo reply came;
- `rejected`: TCP RST (ECONNREFUSED), an ICMP/ICMPv6 destination-unreachable (EHOSTUNREACH,
  EACCES, ECONNREFUSED for UDP; parsed from the raw socket for echo probes), or the local
  stack refused (EPERM, ENETUNREACH);
- `blocked`: nothing came back before the timeout (a silent drop).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time

from hyperwall.lab.probe_messages import ProbeOutcome, ProbeRequest

_REFUSALS = {
    errno.ECONNREFUSED: "connection refused",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.EACCES: "administratively prohibited",
    errno.EPERM: "not permitted",
    errno.EHOSTDOWN: "host down",
    errno.ECONNRESET: "connection reset",
}
ICMP_ECHO_REQUEST = 8
ICMP_ECHO_REPLY = 0
ICMP_UNREACH = 3
ICMP6_ECHO_REQUEST = 128
ICMP6_ECHO_REPLY = 129
ICMP6_UNREACH = 1


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _refused(exc: OSError) -> ProbeOutcome | None:
    if exc.errno in _REFUSALS:
        return ProbeOutcome("rejected", _REFUSALS[exc.errno])
    return None


def _left(deadline: float) -> float:
    return max(0.001, deadline - time.monotonic())


def probe_tcp(req: ProbeRequest) -> ProbeOutcome:
    deadline = time.monotonic() + req.timeout
    with socket.socket(_family(req.dst), socket.SOCK_STREAM) as s:
        s.bind((req.src, 0))
        s.settimeout(req.timeout)
        try:
            s.connect((req.dst, req.port))
        except TimeoutError:
            return ProbeOutcome("blocked", "no answer to the SYN")
        except OSError as exc:
            refused = _refused(exc)
            if refused is None:
                raise
            return refused
        try:
            s.settimeout(_left(deadline))
            s.sendall(b"\x2a")
            echoed = s.recv(1)
        except TimeoutError:
            return ProbeOutcome("blocked", "connected, but the byte was not echoed")
        except OSError as exc:
            refused = _refused(exc)
            if refused is None:
                raise
            return refused
        if echoed != b"\x2a":
            return ProbeOutcome("blocked", "connected, but the byte was not echoed")
        return ProbeOutcome("allowed", "connected, byte echoed")


def probe_udp(req: ProbeRequest) -> ProbeOutcome:
    payload = b"hwl" + os.urandom(8)
    with socket.socket(_family(req.dst), socket.SOCK_DGRAM) as s:
        s.bind((req.src, 0))
        s.connect((req.dst, req.port))
        s.settimeout(req.timeout)
        try:
            s.send(payload)
            deadline = time.monotonic() + req.timeout
            while True:
                s.settimeout(_left(deadline))
                if s.recv(2048) == payload:
                    return ProbeOutcome("allowed", "reply received")
        except TimeoutError:
            return ProbeOutcome("blocked", "no reply")
        except OSError as exc:
            refused = _refused(exc)
            if refused is None:
                raise
            return refused


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return int(~total & 0xFFFF)


def _match4(packet: bytes, ident: int, dst: str) -> ProbeOutcome | None:
    """Classify an ICMPv4 packet (with its IP header) received during our echo probe."""
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 8:
        return None
    kind, code = packet[ihl], packet[ihl + 1]
    sender = socket.inet_ntoa(packet[12:16])
    echo_id = struct.unpack("!H", packet[ihl + 4 : ihl + 6])[0]
    if kind == ICMP_ECHO_REPLY and sender == dst and echo_id == ident:
        return ProbeOutcome("allowed", "echo reply")
    if kind == ICMP_UNREACH:
        inner = packet[ihl + 8 :]
        if len(inner) < 20:
            return None
        inner_ihl = (inner[0] & 0x0F) * 4
        if inner[9] != 1 or socket.inet_ntoa(inner[16:20]) != dst:
            return None
        icmp = inner[inner_ihl:]
        if len(icmp) >= 6 and struct.unpack("!H", icmp[4:6])[0] == ident:
            return ProbeOutcome(
                "rejected", f"ICMP destination unreachable code {code} from {sender}"
            )
    return None


def _match6(packet: bytes, sender: str, ident: int, dst: str) -> ProbeOutcome | None:
    """Classify an ICMPv6 message (no IP header on raw v6 sockets)."""
    if len(packet) < 8:
        return None
    kind, code = packet[0], packet[1]
    echo_id = struct.unpack("!H", packet[4:6])[0]
    if kind == ICMP6_ECHO_REPLY and sender == dst and echo_id == ident:
        return ProbeOutcome("allowed", "echo reply")
    if kind == ICMP6_UNREACH and len(packet) >= 8 + 40 + 8:
        inner = packet[8:]
        inner_dst = socket.inet_ntop(socket.AF_INET6, inner[24:40])
        if inner[6] != 58 or inner_dst != dst:
            return None
        if struct.unpack("!H", inner[44:46])[0] == ident:
            return ProbeOutcome(
                "rejected", f"ICMPv6 destination unreachable code {code} from {sender}"
            )
    return None


def probe_icmp(req: ProbeRequest) -> ProbeOutcome:
    v6 = req.proto == "icmpv6"
    ident = int.from_bytes(os.urandom(2), "big")
    body = b"hyperwall-lab"
    if v6:
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        packet = struct.pack("!BBHHH", ICMP6_ECHO_REQUEST, 0, 0, ident, 1) + body
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        packet = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, 1) + body
        packet = packet[:2] + struct.pack("!H", _checksum(packet)) + packet[4:]
    with s:
        s.bind((req.src, 0))
        try:
            s.sendto(packet, (req.dst, 0))
        except OSError as exc:
            refused = _refused(exc)
            if refused is None:
                raise
            return refused
        deadline = time.monotonic() + req.timeout
        while True:
            s.settimeout(_left(deadline))
            try:
                data, addr = s.recvfrom(4096)
            except TimeoutError:
                return ProbeOutcome("blocked", "no echo reply")
            outcome = (
                _match6(data, addr[0], ident, req.dst) if v6 else _match4(data, ident, req.dst)
            )
            if outcome is not None:
                return outcome


def run_probe(req: ProbeRequest) -> ProbeOutcome:
    """One probe; setup failures (a bad source address...) come back as `error`."""
    try:
        if req.proto == "tcp":
            return probe_tcp(req)
        if req.proto == "udp":
            return probe_udp(req)
        return probe_icmp(req)
    except OSError as exc:
        return ProbeOutcome("error", f"{type(exc).__name__}: {exc}")
