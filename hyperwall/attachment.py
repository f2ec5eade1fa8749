"""How a VM attaches to its hypervisor host: the one spelling of the attachment mode that the
agent (`hyperwall agent --mode`), the nftables base chains (`dataplane.nft` render options)
and the lab (`hyperwall lab up --mode`) share.

"routed": each VM link is a routed point-to-point link of the host; "bridge": the VM links
are ports of a Linux bridge, filtered through br_netfilter (docs/design/dataplane.md).
"""

from __future__ import annotations

from typing import Literal

Attachment = Literal["routed", "bridge"]
ATTACHMENTS: tuple[Attachment, ...] = ("routed", "bridge")


def parse_attachment(text: str) -> Attachment | None:
    """`text` as an `Attachment`, or None if it names none."""
    return next((a for a in ATTACHMENTS if a == text), None)
