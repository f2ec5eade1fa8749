"""ctnetlink events: the kernel's NEW and DESTROY notices of conntrack entries, decoded. Pure.

Counterpart of `conntrack.listener` (the socket subscribed to the event groups, the only
I/O) and `conntrack.attrs` (the tuples inside, decoded by the same code as a dump). A
socket bound to multicast groups `NFNLGRP_CONNTRACK_NEW` and `NFNLGRP_CONNTRACK_DESTROY`
receives one message per entry confirmed (`IPCTNL_MSG_CT_NEW` with `NLM_F_CREATE`) and per
entry destroyed (`IPCTNL_MSG_CT_DELETE`). What the kernel puts in them
(net/netfilter/nf_conntrack_netlink.c, `ctnetlink_conntrack_event`):

- always both tuples, the status and `CTA_ID` (a 32-bit id, unique among live entries:
  the key that pairs a DESTROY with its NEW);
- `CTA_MARK` whenever the mark is not 0 (our admitting rules set it: `nft.ct_mark`);
- on DESTROY, `CTA_COUNTERS_ORIG` / `CTA_COUNTERS_REPLY` (packets and bytes each way) when
  accounting is on in that namespace (`net.netfilter.nf_conntrack_acct=1`), and
  `CTA_TIMESTAMP` (start and stop, wall-clock nanoseconds) when timestamps are on
  (`net.netfilter.nf_conntrack_timestamp=1`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from hyperwall.dataplane.conntrack import attrs, messages
from hyperwall.dataplane.conntrack.entry import Tuple

NFNLGRP_CONNTRACK_NEW = 1
NFNLGRP_CONNTRACK_DESTROY = 3
GROUPS = (1 << (NFNLGRP_CONNTRACK_NEW - 1)) | (1 << (NFNLGRP_CONNTRACK_DESTROY - 1))

CTA_COUNTERS_ORIG = 9
CTA_COUNTERS_REPLY = 10
CTA_ID = 12
CTA_TIMESTAMP = 20
CTA_COUNTERS_PACKETS = 1
CTA_COUNTERS_BYTES = 2
CTA_COUNTERS32_PACKETS = 3
CTA_COUNTERS32_BYTES = 4
CTA_TIMESTAMP_START = 1
CTA_TIMESTAMP_STOP = 2

_KIND = {messages.IPCTNL_MSG_CT_NEW: "new", messages.IPCTNL_MSG_CT_DELETE: "destroy"}
EventKind = Literal["new", "destroy"]


@dataclass(frozen=True, slots=True)
class Counters:
    """Packets and bytes of one direction."""

    packets: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    """One NEW or DESTROY. `start`/`stop` are wall-clock seconds from the kernel's
    timestamp extension (None without it); the counters are None without accounting."""

    kind: EventKind
    id: int
    orig: Tuple
    mark: int
    orig_counters: Counters | None = None
    reply_counters: Counters | None = None
    start: float | None = None
    stop: float | None = None


def _be(data: bytes | memoryview, span: tuple[int, int]) -> int:
    return int.from_bytes(data[span[0] : span[1]], "big")


def _counters(data: bytes | memoryview, span: tuple[int, int] | None) -> Counters | None:
    if span is None:
        return None
    found = attrs.parse(data, *span)
    packets = found.get(CTA_COUNTERS_PACKETS) or found.get(CTA_COUNTERS32_PACKETS)
    octets = found.get(CTA_COUNTERS_BYTES) or found.get(CTA_COUNTERS32_BYTES)
    return Counters(
        _be(data, packets) if packets else 0,
        _be(data, octets) if octets else 0,
    )


def _timestamp(
    data: bytes | memoryview, span: tuple[int, int] | None
) -> tuple[float | None, float | None]:
    if span is None:
        return None, None
    found = attrs.parse(data, *span)
    start, stop = found.get(CTA_TIMESTAMP_START), found.get(CTA_TIMESTAMP_STOP)
    return (
        _be(data, start) / 1e9 if start else None,
        _be(data, stop) / 1e9 if stop else None,
    )


def decode_event(data: bytes | memoryview, kind: int, start: int, end: int) -> Event | None:
    """The event in `data[start:end]` (a message's attributes, after the nfgenmsg header) of
    message type `kind` (the low byte of the netlink type); None for a message that is not
    a ctnetlink NEW or DELETE. Raises `attrs.DecodeError` for attributes that do not hold
    an entry."""
    name = _KIND.get(kind & 0xFF)
    if name is None or kind >> 8 != messages.NFNL_SUBSYS_CTNETLINK:
        return None
    top = attrs.parse(data, start, end)
    if attrs.CTA_TUPLE_ORIG not in top or CTA_ID not in top:
        raise attrs.DecodeError("event without original tuple or id")
    orig, _ = attrs.decode_tuple(data, top[attrs.CTA_TUPLE_ORIG])
    mark = top.get(attrs.CTA_MARK)
    ts_start, ts_stop = _timestamp(data, top.get(CTA_TIMESTAMP))
    return Event(
        kind=name,  # type: ignore[arg-type]
        id=_be(data, top[CTA_ID]),
        orig=orig,
        mark=_be(data, mark) if mark else 0,
        orig_counters=_counters(data, top.get(CTA_COUNTERS_ORIG)),
        reply_counters=_counters(data, top.get(CTA_COUNTERS_REPLY)),
        start=ts_start,
        stop=ts_stop,
    )


def decode_events(data: bytes | memoryview) -> tuple[list[Event], int]:
    """The events in one buffer read from the socket, and how many messages in it could
    not be decoded (counted, not fatal: one bad message must not stop the reader)."""
    out: list[Event] = []
    bad = 0
    for reply in messages.replies(data):
        if reply.error is not None or reply.done:
            continue
        try:
            event = decode_event(data, reply.kind, reply.start, reply.end)
        except (attrs.DecodeError, struct.error, IndexError, ValueError):
            bad += 1
            continue
        if event is not None:
            out.append(event)
    return out, bad


def event_message(event: Event, family: int, extra: bytes = b"") -> bytes:
    """`event` as the kernel sends it (its attributes, then `extra`): for tests and fuzzing."""
    body = [
        attrs.encode_tuple(attrs.CTA_TUPLE_ORIG, event.orig),
        attrs.attr(CTA_ID, struct.pack(">I", event.id)),
    ]
    if event.mark:
        body.append(attrs.attr(attrs.CTA_MARK, struct.pack(">I", event.mark)))
    for kind, counters in (
        (CTA_COUNTERS_ORIG, event.orig_counters),
        (CTA_COUNTERS_REPLY, event.reply_counters),
    ):
        if counters is not None:
            body.append(
                attrs.nest(
                    kind,
                    attrs.attr(CTA_COUNTERS_PACKETS, struct.pack(">Q", counters.packets)),
                    attrs.attr(CTA_COUNTERS_BYTES, struct.pack(">Q", counters.bytes)),
                )
            )
    if event.start is not None:
        stamps = [attrs.attr(CTA_TIMESTAMP_START, struct.pack(">Q", round(event.start * 1e9)))]
        if event.stop is not None:
            stamps.append(
                attrs.attr(CTA_TIMESTAMP_STOP, struct.pack(">Q", round(event.stop * 1e9)))
            )
        body.append(attrs.nest(CTA_TIMESTAMP, *stamps))
    msg_kind = messages.IPCTNL_MSG_CT_NEW if event.kind == "new" else messages.IPCTNL_MSG_CT_DELETE
    return messages.message(msg_kind, 0, 0, family, b"".join(body) + extra)
