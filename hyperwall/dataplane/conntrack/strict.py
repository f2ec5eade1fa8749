"""Strict TCP: a TCP packet that is not a SYN, and for which the host has no connection
state, is not picked up by conntrack. Per network namespace.

Chosen: `net.netfilter.nf_conntrack_tcp_loose=0` in each host's namespace, not a rule.
With loose=0, conntrack refuses to create an entry from a mid-stream packet; the packet
has no entry and nftables sees it as `ct state invalid`, which our base chain already
drops (`nft.base_chains`: `ct state invalid drop` right after the established rule). The
rule alternative, `tcp flags != syn ct state new drop`, is not in our table (a new
connection from a VM or to a VM goes straight to its dispatch map): it would be one more
rule on every new connection, and loose=1 would still create an entry for the dropped
packet (a conntrack entry per stray ACK, until it times out). With loose=0 the stray packet
creates nothing, and the existing invalid rule counts and drops it. What it costs:
connections the host did not see start (an agent restart does not lose entries, but a
moved VM does) break unless their entries are handed over, which is what
`conntrack.transfer` is for.

The sysctl is per network namespace: it is written from a thread inside the namespace.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from hyperwall.dataplane.conntrack.watch import events_here
from hyperwall.dataplane.netns import inside

_LOOSE = Path("/proc/sys/net/netfilter/nf_conntrack_tcp_loose")


def set_tcp_loose(netns: str, loose: bool) -> None:
    """Set `nf_conntrack_tcp_loose` in namespace `netns` (False: strict TCP)."""
    with inside(netns):
        _LOOSE.write_text("1\n" if loose else "0\n")


def tcp_loose(netns: str) -> bool:
    """Whether namespace `netns` picks up TCP connections mid-stream."""
    with inside(netns):
        return _LOOSE.read_text().strip() != "0"


def strict_tcp(netns: str) -> None:
    """Strict TCP in `netns`."""
    set_tcp_loose(netns, False)


def strict_tcp_here() -> None:
    """Strict TCP in the calling process's namespace (the agent runs in its host's), and
    conntrack events from every entry (`watch.events_here`: a migration's change list
    needs them). The conntrack module must be loaded for the sysctls to exist: it is, once
    the agent's table (which uses `ct state`) is in the kernel; if not yet, it is loaded
    now."""
    if not _LOOSE.exists():
        subprocess.run(["modprobe", "nf_conntrack"], check=False, capture_output=True)
    _LOOSE.write_text("0\n")
    events_here()
