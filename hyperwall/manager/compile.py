"""Which hosts' programs a change touches: compile before and after, compare program hashes."""

from __future__ import annotations

from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.serialize import program_hash
from hyperwall.policy.model import Catalog


def host_hashes(catalog: Catalog | None) -> dict[str, str]:
    """The program hash of every host that runs a declared workload."""
    if catalog is None:
        return {}
    hosts = sorted({w.host for w in catalog.workloads.values()})
    compiler = FleetCompiler(catalog.config, catalog.workloads.values())
    return {host: program_hash(compiler.host_program(host)) for host in hosts}


def changed_hosts(before: Catalog | None, after: Catalog | None) -> list[str]:
    """Hosts whose program differs between two document sets (a host absent on one side
    counts as changed: it gains or loses every endpoint)."""
    old, new = host_hashes(before), host_hashes(after)
    return sorted(h for h in set(old) | set(new) if old.get(h) != new.get(h))
