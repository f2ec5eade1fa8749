"""A host's program while workloads move to it (live migration). Pure.

During a live migration the VM must be enforced on the destination before it runs there
(docs/design/migration.md, "destination ready first"), while the documents still place it
on the source, which enforces it until the switchover. So for a while the VM is on two
hosts: the source's program is the ordinary one (the documents), the destination's is
compiled from the same documents with the moving VMs placed on it (`moving_program`).
Other hosts' programs do not change: address sets hold addresses, not hosts.

Counterpart of `manager.moves`, which keeps the moves and serves this program to the
destination's agent (the policy-folder agents do the same for themselves:
`agent.migration.IncomingOverlay`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.program import HostProgram
from hyperwall.policy.model import Catalog


def placed(catalog: Catalog, moves: Mapping[str, str]) -> Catalog:
    """`catalog` with each workload of `moves` (key -> host) on that host; keys that are
    not workloads of `catalog` are ignored."""
    workloads = dict(catalog.workloads)
    for key, host in moves.items():
        if key in workloads:
            workloads[key] = replace(workloads[key], host=host)
    return replace(catalog, workloads=workloads)


def moving_program(catalog: Catalog, moves: Mapping[str, str], host: str) -> HostProgram:
    """`host`'s program with the workloads moving to it (`moves`: key -> destination)
    placed there; the other moves do not touch it."""
    mine = {k: h for k, h in moves.items() if h == host}
    moved = placed(catalog, mine)
    return FleetCompiler(moved.config, moved.workloads.values()).host_program(host)
