"""NFLOG messages (nfnetlink_log, `NFNL_SUBSYS_ULOG`) as values, and the configuration
messages that bind a log group. Pure.

Counterpart of `nflog.socket` (which sends `config_messages` and reads buffers that
`parse_messages` turns into `LogMessage`s) and `nflog.packet` (the headers of the copied
packet). A logged packet arrives as one netlink message: nfgenmsg (family, version, the
group in `res_id`), then attributes (linux/netfilter/nfnetlink_log.h): the prefix, the
hook, the in/out interface indexes (and the bridge ports, `PHYS*`), the packet's mark,
its timestamp when the kernel stamped it, and as much of the packet from its network
header as the copy range allows. `encode_message` is the inverse of the parser (tests, and
the property test that the two round-trip).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
MSG_PACKET = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET
MSG_CONFIG = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
NLM_F_ACK = 4

# packet attributes
NFULA_PACKET_HDR = 1
NFULA_MARK = 2
NFULA_TIMESTAMP = 3
NFULA_IFINDEX_INDEV = 4
NFULA_IFINDEX_OUTDEV = 5
NFULA_IFINDEX_PHYSINDEV = 6
NFULA_IFINDEX_PHYSOUTDEV = 7
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
# configuration attributes and commands
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_NLBUFSIZ = 3
NFULA_CFG_TIMEOUT = 4
NFULA_CFG_QTHRESH = 5
NFULNL_CFG_CMD_BIND = 1
NFULNL_CFG_CMD_UNBIND = 2
NFULNL_COPY_PACKET = 2

_NLMSG = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_NFGEN = struct.Struct("!BBH")  # family, version, res_id (the group, network order)
_NLA = struct.Struct("=HH")  # length, type
NLA_TYPE_MASK = 0x3FFF
_HDR = struct.Struct("!HBx")  # hw_protocol, hook
_TIMESTAMP = struct.Struct("!QQ")  # seconds, microseconds
_U32 = struct.Struct("!I")
_ERRNO = struct.Struct("=i")


class NflogDecodeError(ValueError):
    """A buffer that is not well-formed netlink (truncated or overrunning lengths)."""


@dataclass(slots=True)  # not frozen: made per logged packet, and frozen costs 4x to make
class LogMessage:
    """One logged packet (treated as immutable)."""

    group: int
    family: int  # the hook's protocol family: 2 IPv4, 10 IPv6, 7 bridge
    prefix: str
    hook: int | None = None
    hw_protocol: int | None = None  # the packet's ethertype
    mark: int | None = None
    timestamp_us: int | None = None  # microseconds since the epoch, if the kernel stamped it
    indev: int | None = None  # interface indexes
    outdev: int | None = None
    physindev: int | None = None  # bridge ports (br_netfilter)
    physoutdev: int | None = None
    payload: bytes = b""  # the packet from its network header, up to the copy range


# attribute -> what `decode_packet` does with it: 0-3 an interface slot, 4 the mark,
# 5 the payload, 6 the prefix, 7 the packet header, 8 the timestamp; others are skipped
_ROLES = {
    NFULA_IFINDEX_INDEV: 0,
    NFULA_IFINDEX_OUTDEV: 1,
    NFULA_IFINDEX_PHYSINDEV: 2,
    NFULA_IFINDEX_PHYSOUTDEV: 3,
    NFULA_MARK: 4,
    NFULA_PAYLOAD: 5,
    NFULA_PREFIX: 6,
    NFULA_PACKET_HDR: 7,
    NFULA_TIMESTAMP: 8,
}


def decode_packet(data: bytes, start: int, end: int) -> LogMessage:
    """The logged packet in one message's payload (after the netlink header): one pass
    over its attributes (the last of a kind wins), no intermediate objects."""
    if end - start < _NFGEN.size:
        raise NflogDecodeError("an NFLOG message without its nfgenmsg header")
    family, _version, res_id = _NFGEN.unpack_from(data, start)
    hook = hw_protocol = stamp = None
    slots: list[int | None] = [None, None, None, None, None]  # 4 interfaces, the mark
    prefix = ""
    payload = b""
    nla, u32, roles = _NLA.unpack_from, _U32.unpack_from, _ROLES
    pos = start + _NFGEN.size
    while pos + 4 <= end:
        length, kind = nla(data, pos)
        if length < 4 or pos + length > end:
            raise NflogDecodeError(f"attribute {kind} of length {length} overruns its message")
        role = roles.get(kind & NLA_TYPE_MASK)
        s, e = pos + 4, pos + length
        pos += (length + 3) & ~3
        if role is None:
            continue
        if role < 5:
            if e - s < 4:
                raise NflogDecodeError("a 32-bit attribute is too short")
            slots[role] = u32(data, s)[0]
        elif role == 5:
            payload = data[s:e]
        elif role == 6:
            prefix = data[s:e].split(b"\0", 1)[0].decode(errors="replace")
        elif role == 7:
            if e - s < _HDR.size:
                raise NflogDecodeError("the packet header attribute is too short")
            hw_protocol, hook = _HDR.unpack_from(data, s)
        else:
            if e - s < _TIMESTAMP.size:
                raise NflogDecodeError("the timestamp attribute is too short")
            seconds, micros = _TIMESTAMP.unpack_from(data, s)
            stamp = seconds * 1_000_000 + micros
    indev, outdev, physindev, physoutdev, mark = slots
    return LogMessage(
        res_id, family, prefix, hook, hw_protocol, mark, stamp,
        indev, outdev, physindev, physoutdev, payload,
    )  # fmt: skip


def parse_messages(data: bytes | memoryview) -> Iterator[LogMessage | int]:
    """The logged packets in one buffer read from the socket; a netlink error answer
    yields its (negative) errno, 0 for an acknowledgement; other messages are skipped."""
    data = bytes(data)  # one copy, so that each slice of it is bytes (no copy of a copy)
    pos = 0
    while pos + _NLMSG.size <= len(data):
        length, kind, _flags, _seq, _port = _NLMSG.unpack_from(data, pos)
        if length < _NLMSG.size or pos + length > len(data):
            raise NflogDecodeError(f"netlink message of length {length} overruns the buffer")
        if kind == MSG_PACKET:
            yield decode_packet(data, pos + _NLMSG.size, pos + length)
        elif kind == NLMSG_ERROR:
            if length < _NLMSG.size + _ERRNO.size:
                raise NflogDecodeError("a netlink error message without its errno")
            yield _ERRNO.unpack_from(data, pos + _NLMSG.size)[0]
        pos += (length + 3) & ~3


# -- what we send, and the inverse of the parser ---------------------------------------------


def attribute(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    return _NLA.pack(_NLA.size + len(payload), kind) + payload + b"\0" * (-len(payload) % 4)


def _message(kind: int, flags: int, seq: int, family: int, group: int, body: bytes) -> bytes:
    head = _NFGEN.pack(family, 0, group)
    size = _NLMSG.size + len(head) + len(body)
    return _NLMSG.pack(size, kind, flags, seq, 0) + head + body


def config_messages(
    group: int, copy_range: int, bufsize: int, timeout_cs: int, qthresh: int
) -> list[bytes]:
    """The requests that bind `group` to a socket: bind, copy `copy_range` bytes of each
    packet, flush a batch of `qthresh` messages or after `timeout_cs` hundredths of a
    second, into netlink buffers of `bufsize` bytes. Each asks for an acknowledgement."""
    flags = NLM_F_REQUEST | NLM_F_ACK
    parts = [
        attribute(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND])),
        attribute(NFULA_CFG_MODE, struct.pack("!IBx", copy_range, NFULNL_COPY_PACKET)),
        attribute(NFULA_CFG_NLBUFSIZ, _U32.pack(bufsize)),
        attribute(NFULA_CFG_TIMEOUT, _U32.pack(timeout_cs)),
        attribute(NFULA_CFG_QTHRESH, _U32.pack(qthresh)),
    ]
    return [_message(MSG_CONFIG, flags, i + 1, 0, group, p) for i, p in enumerate(parts)]


def unbind_message(group: int) -> bytes:
    cmd = attribute(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_UNBIND]))
    return _message(MSG_CONFIG, NLM_F_REQUEST, 0, 0, group, cmd)


def encode_message(message: LogMessage) -> bytes:
    """One netlink message carrying `message`, as the kernel sends it."""
    parts = []
    if message.hw_protocol is not None or message.hook is not None:
        hdr = _HDR.pack(message.hw_protocol or 0, message.hook or 0)
        parts.append(attribute(NFULA_PACKET_HDR, hdr))
    if message.mark is not None:
        parts.append(attribute(NFULA_MARK, _U32.pack(message.mark)))
    if message.timestamp_us is not None:
        seconds, micros = divmod(message.timestamp_us, 1_000_000)
        parts.append(attribute(NFULA_TIMESTAMP, _TIMESTAMP.pack(seconds, micros)))
    for key, value in (
        (NFULA_IFINDEX_INDEV, message.indev),
        (NFULA_IFINDEX_OUTDEV, message.outdev),
        (NFULA_IFINDEX_PHYSINDEV, message.physindev),
        (NFULA_IFINDEX_PHYSOUTDEV, message.physoutdev),
    ):
        if value is not None:
            parts.append(attribute(key, _U32.pack(value)))
    if message.payload:
        parts.append(attribute(NFULA_PAYLOAD, message.payload))
    if message.prefix:
        parts.append(attribute(NFULA_PREFIX, message.prefix.encode() + b"\0"))
    return _message(MSG_PACKET, 0, 0, message.family, message.group, b"".join(parts))
