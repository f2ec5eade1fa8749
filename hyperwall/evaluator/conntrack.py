"""The reference evaluator's connection table: conntrack's meaning, without timeouts.

One table per host, as the kernel has one per network namespace. A connection is recorded
when its first packet is admitted; its later packets and its replies are `established`, an
ICMP error about it is `related`; a reply-only packet with no connection is `invalid`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hyperwall.evaluator.packet import Flow, Packet

State = Literal["new", "established", "related", "invalid"]


@dataclass
class ConnTable:
    flows: set[Flow] = field(default_factory=set)

    def state(self, packet: Packet) -> State:
        flow = packet.flow()
        if flow in self.flows or flow.reverse() in self.flows:
            return "established"
        if packet.related is not None and (
            packet.related in self.flows or packet.related.reverse() in self.flows
        ):
            return "related"
        if packet.is_reply_only():
            return "invalid"
        return "new"

    def admit(self, packet: Packet) -> None:
        """Record the connection `packet` opens (call once the packet was accepted)."""
        self.flows.add(packet.flow())

    def forget(self, flow: Flow) -> None:
        self.flows.discard(flow)
        self.flows.discard(flow.reverse())
