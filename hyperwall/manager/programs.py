"""Every host's program at the store's current revision, kept by one incremental compiler.

The manager is the central compiler (as NSX's control plane): agents receive their host's
program, or the delta from the program they hold, never the whole document set. This module
is the synchronous core of that; `fleetwatch.FleetWatch` drives it from the store's watch.

State: the documents and their `Catalog` at `revision`, a `FleetCompiler` over them, and per
host the current `HostVersion` (the revision where the host's program last changed, the
program and its digest) plus the few previous versions, so that an agent one or a few
changes behind gets a delta.

`advance(revision)` applies one revision's document changes: workloads through
`set_workload`/`remove_workload`, anything else through `set_config`. Which hosts to
re-assemble is found by object identity (the compiler keeps the identity of everything that
did not change): address sets, chains and endpoints are compared with the objects last seen,
and only the hosts that use a changed one get `host_program` + `diff`. A host whose delta is
empty keeps its version.

Invariants:
- `host(h).program == compile_host(catalog.config, catalog.workloads, h)` after every call;
- `host(h).digest == program_digest(host(h).program)`;
- versions of a host are kept oldest first with strictly increasing revisions.

Not thread-safe: one thread calls `load`/`advance`/`what_if`; readers only take immutable
`HostVersion`s (a dict lookup), which is safe under the GIL.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hyperwall.compiler.delta import ProgramDelta, diff
from hyperwall.compiler.digest import program_digest, updated_digest
from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.program import AddressSet, Endpoint, HostProgram
from hyperwall.policy.model import Catalog, PolicyConfig, Workload

KEEP = 8  # versions kept per host for deltas


@dataclass(frozen=True, slots=True)
class HostVersion:
    revision: int  # the revision where this program became the host's
    program: HostProgram
    digest: int


def _empty(host: str) -> HostProgram:
    return HostProgram(host, {}, {}, {}, {})


class FleetPrograms:
    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self.revision = 0
        self.catalog: Catalog | None = None
        self.compiler: FleetCompiler | None = None
        self._versions: dict[str, deque[HostVersion]] = {}
        # what each host's current program was assembled from, for change detection
        self._set_users: dict[str, set[str]] = defaultdict(set)
        self._chain_users: dict[str, set[str]] = defaultdict(set)
        self._seen_sets: dict[str, AddressSet] = {}
        self._seen_chains: dict[str, object] = {}
        self._seen_endpoints: dict[str, tuple[Endpoint, ...]] = {}
        self._members: dict[str, frozenset[str]] = {}  # host -> its workload keys

    # -- reading ------------------------------------------------------------------------

    def host(self, host: str) -> HostVersion:
        """The host's current version (an empty program at revision 0 if it has none)."""
        versions = self._versions.get(host)
        if not versions:
            empty = _empty(host)
            return HostVersion(0, empty, program_digest(empty))
        return versions[-1]

    def hosts(self) -> list[str]:
        return sorted(h for h, v in self._versions.items() if v and v[-1].program.endpoints)

    def since(self, host: str, digest: int) -> tuple[HostVersion, ProgramDelta | None]:
        """The current version, and the delta to it from the kept version with `digest`
        (None: no kept version has that digest; the caller sends the whole program)."""
        current = self.host(host)
        if digest == current.digest:
            return current, diff(current.program, current.program)
        for old in reversed(self._versions.get(host, ())):
            if old.digest == digest:
                return current, diff(old.program, current.program)
        return current, None

    def digests(self) -> dict[str, int]:
        return {h: self.host(h).digest for h in self.hosts()}

    # -- changing -----------------------------------------------------------------------

    def load(self, revision: int, catalog: Catalog | None) -> list[str]:
        """Start over from a whole document set (first start, or after a resync)."""
        self.revision = revision
        self.catalog = catalog
        if catalog is None:
            self.compiler = None
            return self._refresh(set(self._versions))
        self.compiler = FleetCompiler(catalog.config, catalog.workloads.values())
        self._seen_sets.clear()
        self._seen_chains.clear()
        self._seen_endpoints.clear()
        return self._refresh(set(self._versions) | set(self.compiler.hosts()))

    def advance(self, revision: int, catalog: Catalog) -> list[str]:
        """Move to `revision` whose validated documents are `catalog`; the hosts whose
        programs changed."""
        if self.compiler is None or self.catalog is None:
            return self.load(revision, catalog)
        self._apply(self.compiler, self.catalog, catalog)
        self.catalog = catalog
        self.revision = revision
        return self._refresh(self._affected())

    def what_if(self, catalog: Catalog) -> list[str]:
        """The hosts whose programs would change if the documents became `catalog`
        (nothing is kept: the compiler is put back)."""
        if self.compiler is None or self.catalog is None:
            fresh = FleetCompiler(catalog.config, catalog.workloads.values())
            return sorted(h for h in fresh.hosts() if fresh.host_program(h).endpoints)
        current = self.catalog
        self._apply(self.compiler, current, catalog)
        try:
            changed = []
            for host in sorted(self._affected()):
                new = self.compiler.host_program(host)
                if not diff(self.host(host).program, new).is_empty():
                    changed.append(host)
            return changed
        finally:
            self._apply(self.compiler, catalog, current)

    @staticmethod
    def _apply(compiler: FleetCompiler, old: Catalog, new: Catalog) -> None:
        if new.config is not old.config and new.config != old.config:
            config: PolicyConfig = new.config
            compiler.set_config(config)
        _sync_workloads(compiler, old.workloads, new.workloads)

    def _affected(self) -> set[str]:
        compiler = self.compiler
        assert compiler is not None
        hosts: set[str] = set()
        for name, users in self._set_users.items():
            if users and self._set_changed(compiler, name):
                hosts |= users
        for name, users in self._chain_users.items():
            if not users:
                continue
            policy = name.partition(":")[2]
            if policy not in compiler.config.policies or compiler.chain(name) is not (
                self._seen_chains.get(name)
            ):
                hosts |= users
        for host in set(self._members) | set(compiler.hosts()):
            members = frozenset(compiler.by_host.get(host, ()))
            if members != self._members.get(host):
                hosts.add(host)
                continue
            for wk in members:
                if compiler.endpoints(wk) is not self._seen_endpoints.get(wk):
                    hosts.add(host)
                    break
        return hosts

    def _set_changed(self, compiler: FleetCompiler, name: str) -> bool:
        try:
            return compiler.address_set(name) is not self._seen_sets.get(name)
        except KeyError:  # no rule names the set any more
            return True

    def _refresh(self, hosts: Iterable[str]) -> list[str]:
        changed = []
        for host in sorted(set(hosts)):
            if self._rebuild(host):
                changed.append(host)
        return changed

    def _rebuild(self, host: str) -> bool:
        compiler = self.compiler
        new = compiler.host_program(host) if compiler is not None else _empty(host)
        self._index(host, new)
        versions = self._versions.setdefault(host, deque(maxlen=self.keep))
        if not versions:
            versions.append(HostVersion(self.revision, new, program_digest(new)))
            return bool(new.endpoints)
        old = versions[-1]
        change = diff(old.program, new)
        if change.is_empty():
            return False
        digest = updated_digest(old.digest, old.program, change)
        versions.append(HostVersion(self.revision, new, digest))
        return True

    def _index(self, host: str, program: HostProgram) -> None:
        """Record what `program` was assembled from (the objects seen now)."""
        compiler = self.compiler
        current = self._versions.get(host)
        if current:
            for name in current[-1].program.address_sets:
                self._set_users[name].discard(host)
            for name in current[-1].program.chains:
                self._chain_users[name].discard(host)
        for name, s in program.address_sets.items():
            self._set_users[name].add(host)
            self._seen_sets[name] = s
        if compiler is None:
            self._members[host] = frozenset()
            return
        for name in program.chains:
            self._chain_users[name].add(host)
            self._seen_chains[name] = compiler.chain(name)
        members = frozenset(compiler.by_host.get(host, ()))
        self._members[host] = members
        for wk in members:
            self._seen_endpoints[wk] = compiler.endpoints(wk)


def _sync_workloads(
    compiler: FleetCompiler, old: Mapping[str, Workload], new: Mapping[str, Workload]
) -> None:
    if old is new:
        return
    for key in old.keys() - new.keys():
        compiler.remove_workload(key)
    for key, w in new.items():
        prev = old.get(key)
        if prev is not w and prev != w:
            compiler.set_workload(w)
