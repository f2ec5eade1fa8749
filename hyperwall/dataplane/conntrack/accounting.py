"""Per-connection accounting and timestamps in a network namespace: what connection records
need from conntrack.

`net.netfilter.nf_conntrack_acct=1` makes every entry count packets and bytes each way (a
DESTROY event then carries them), `nf_conntrack_timestamp=1` stamps its start and stop.
Both are per network namespace and apply to entries created after they are set: the agent
sets them in its host's namespace before it programs the table. Measured cost on this
machine: see docs/benchmarks.md ("connection records").
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from hyperwall.dataplane.netns import inside

_SYSCTL = Path("/proc/sys/net/netfilter")
SETTINGS = ("nf_conntrack_acct", "nf_conntrack_timestamp")


def enable_here() -> None:
    """Accounting and timestamps on in the calling thread's namespace (loads the conntrack
    module first if its sysctls are not there yet)."""
    if not (_SYSCTL / SETTINGS[0]).exists():
        subprocess.run(["modprobe", "nf_conntrack"], check=False, capture_output=True)
    for name in SETTINGS:
        (_SYSCTL / name).write_text("1\n")


def enable(netns: str) -> None:
    """`enable_here` in namespace `netns`."""
    with inside(netns):
        enable_here()


def enabled(netns: str) -> dict[str, bool]:
    """Each setting's state in `netns`."""
    with inside(netns):
        return {name: (_SYSCTL / name).read_text().strip() == "1" for name in SETTINGS}
