"""Every host's program at the store's current revision, kept by one incremental compiler.

The manager is the central compiler (as NSX's control plane): agents receive their host's
program, or the delta from the program they hold, never the whole document set. This module
is the synchronous core of that (pure: no I/O, no clock); its counterpart
`manager.fleetwatch.FleetWatch` drives it from the store's watch.

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
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from hyperwall.compiler.chains import CompiledChain
from hyperwall.compiler.delta import ElementChange, ProgramDelta, diff
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
    delta: ProgramDelta | None = None  # from the previous version, when there is one


def _empty(host: str) -> HostProgram:
    return HostProgram(host, {}, {}, {}, {})


class FleetPrograms:
    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self.revision = 0
        self.catalog: Catalog | None = None
        self.compiler: FleetCompiler | None = None
        # what the compiler is over when that is not `catalog`: the last `trial`'s catalog
        # (left there, as the change it checked is usually committed next: `advance`)
        self._trial: Catalog | None = None
        self._versions: dict[str, deque[HostVersion]] = {}
        # what each host's current program was assembled from, for change detection
        self._set_users: dict[str, set[str]] = defaultdict(set)
        self._chain_users: dict[str, set[str]] = defaultdict(set)
        self._seen_sets: dict[str, AddressSet] = {}
        self._seen_chains: dict[str, CompiledChain] = {}
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
            return current, ProgramDelta(host=host)
        versions = self._versions.get(host) or deque()
        if len(versions) >= 2 and versions[-2].digest == digest and current.delta is not None:
            return current, current.delta
        for old in reversed(versions):
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
        self._trial = None
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
        if self.compiler is None or self.catalog is None or _large(self.catalog, catalog):
            return self.load(revision, catalog)
        self._move(self._over(), catalog)
        self._trial = None
        self.catalog = catalog
        self.revision = revision
        return self._advance_hosts()

    def what_if(self, catalog: Catalog) -> list[str]:
        """The hosts whose programs would change if the documents became `catalog`
        (nothing is kept: the compiler is put back)."""
        if self.compiler is None or self.catalog is None or _large(self.catalog, catalog):
            fresh = FleetCompiler(catalog.config, catalog.workloads.values())
            hosts = set(fresh.hosts()) | set(self.hosts())
            return sorted(h for h in hosts if fresh.host_program(h) != self.host(h).program)
        current = self._over()
        self._move(current, catalog)
        try:
            changed = []
            for host in sorted(self._affected()):
                new = self.compiler.host_program(host)
                if not diff(self.host(host).program, new).is_empty():
                    changed.append(host)
            return changed
        finally:
            self._move(catalog, current)

    @contextmanager
    def trial(self, catalog: Catalog) -> Iterator[FleetCompiler]:
        """A compiler over `catalog` while the block runs: this one's, advanced by the
        change, or a fresh one for a large change. Callers read it (the assertion gate
        checks a change with it) on the thread that owns this object. The compiler stays
        over `catalog` after the block (the change is usually committed next, and `advance`
        then has nothing left to compile); every other use moves it from there."""
        if self.compiler is None or self.catalog is None or _large(self.catalog, catalog):
            yield FleetCompiler(catalog.config, catalog.workloads.values())
            return
        self._move(self._over(), catalog)
        self._trial = catalog
        yield self.compiler

    def _over(self) -> Catalog:
        """The catalog the compiler is over now."""
        found = self._trial or self.catalog
        assert found is not None
        return found

    def _move(self, old: Catalog, new: Catalog) -> None:
        """Advance the compiler from `old` to `new`. A failure half way leaves it in no
        known state: it is dropped (the next `advance` compiles afresh)."""
        assert self.compiler is not None
        try:
            self._apply(self.compiler, old, new)
        except BaseException:
            self.compiler = None
            self._trial = None
            raise

    @staticmethod
    def _apply(compiler: FleetCompiler, old: Catalog, new: Catalog) -> None:
        if new.config is not old.config and new.config != old.config:
            config: PolicyConfig = new.config
            compiler.set_config(config)
        _sync_workloads(compiler, old.workloads, new.workloads)

    def _affected(self) -> set[str]:
        """Hosts that may have to change (used by `what_if`)."""
        changes = self._changes()
        return changes.structural | changes.content

    def _changes(self) -> _Changes:
        """What changed in the compiler since the programs were assembled. Hosts whose
        endpoints (or set of workloads) changed are re-assembled whole (`structural`); hosts
        that only use changed sets or chains are patched (`content`)."""
        compiler = self.compiler
        assert compiler is not None
        out = _Changes()
        for name, users in self._set_users.items():
            if not users:
                continue
            try:
                new_set: AddressSet | None = compiler.address_set(name)
            except KeyError:  # no rule names the set any more (its chains changed too)
                new_set = None
            if new_set is not self._seen_sets.get(name):
                out.sets[name] = new_set
                out.content |= users
        for name, users in self._chain_users.items():
            if not users:
                continue
            policy = name.partition(":")[2]
            new = compiler.chain(name) if policy in compiler.config.policies else None
            if new is self._seen_chains.get(name):
                continue
            out.chains[name] = new
            if new is None:  # the policy is gone: its users' endpoints changed too
                out.structural |= users
            else:
                out.content |= users
        for host in set(self._members) | set(compiler.hosts()):
            members = frozenset(compiler.by_host.get(host, ()))
            if members != self._members.get(host) or any(
                compiler.endpoints(wk) is not self._seen_endpoints.get(wk) for wk in members
            ):
                out.structural.add(host)
        out.content -= out.structural
        return out

    def _refresh(self, hosts: Iterable[str]) -> list[str]:
        """Re-assemble `hosts` whole (host_program + diff)."""
        changed = [host for host in sorted(set(hosts)) if self._rebuild(host)]
        return changed

    def _advance_hosts(self) -> list[str]:
        changes = self._changes()
        shared = _SharedChanges.of(changes, self._seen_sets, self._seen_chains)
        changed = [host for host in sorted(changes.content) if self._patch(host, shared)]
        for name, new_set in changes.sets.items():
            if new_set is not None:
                self._seen_sets[name] = new_set
        for name, compiled in changes.chains.items():
            if compiled is not None:
                self._seen_chains[name] = compiled
        changed += self._refresh(changes.structural)
        return sorted(changed)

    def _patch(self, host: str, shared: _SharedChanges) -> bool:
        """A host with the same endpoints, some of whose chains or sets changed: its new
        program is its old one with the changed objects swapped in (and the sets its chains
        now name), its delta made of element changes computed once for the whole fleet."""
        compiler = self.compiler
        assert compiler is not None
        old = self.host(host)
        p = old.program
        chains, blocks = dict(p.chains), dict(p.block_sets)
        chains_put, blocks_put, blocks_delete, block_changes = [], [], [], []
        renamed = False  # a changed chain reads other sets now
        for name, (compiled, prev, same_blocks) in shared.chains.items():
            if name not in chains:
                continue
            if compiled.chain != chains[name]:
                chains_put.append(compiled.chain)
            chains[name] = compiled.chain
            renamed |= compiled.match_sets != prev.match_sets
            for gone in prev.blocks.keys() - compiled.blocks.keys():
                del blocks[gone]
                blocks_delete.append(gone)
            for block_name, block in compiled.blocks.items():
                if block_name not in prev.blocks:
                    blocks_put.append(block)
                blocks[block_name] = block
            block_changes += same_blocks
        names: Iterable[str] = p.address_sets
        if renamed:
            names = sorted(set().union(*(compiler.chain(n).match_sets for n in chains)))
        sets, sets_put, set_changes = {}, [], []
        for name in names:
            current = p.address_sets.get(name)
            if current is None:
                sets[name] = compiler.address_set(name)
                sets_put.append(sets[name])
            elif name in shared.sets:
                sets[name], change = shared.sets[name]
                set_changes.append(change)
            else:
                sets[name] = current
        sets_delete = sorted(p.address_sets.keys() - sets.keys())
        delta = ProgramDelta(
            address_sets_put=tuple(sets_put),
            address_sets_delete=tuple(sets_delete),
            address_elements=tuple(set_changes),
            block_sets_put=tuple(blocks_put),
            block_sets_delete=tuple(sorted(blocks_delete)),
            block_elements=tuple(block_changes),
            chains_put=tuple(chains_put),
            host=host,
        )
        if sets_put or sets_delete:
            self._reindex_sets(host, sets_put, sets_delete)
        if delta.is_empty():
            return False
        new = HostProgram(host, sets, blocks, chains, p.endpoints)
        digest = updated_digest(old.digest, p, delta)
        self._versions[host].append(HostVersion(self.revision, new, digest, delta))
        return True

    def _reindex_sets(self, host: str, added: Iterable[AddressSet], gone: Iterable[str]) -> None:
        for s in added:
            self._set_users[s.name].add(host)
            self._seen_sets[s.name] = s
        for name in gone:
            self._set_users[name].discard(host)

    def _rebuild(self, host: str) -> bool:
        compiler = self.compiler
        new = compiler.host_program(host) if compiler is not None else _empty(host)
        self._index(host, new)
        versions = self._versions.setdefault(host, deque(maxlen=self.keep))
        if not versions:  # a new host: its history starts from the empty program
            versions.append(self.host(host))
        old = versions[-1]
        change = diff(old.program, new)
        if change.is_empty():
            return False
        digest = updated_digest(old.digest, old.program, change)
        versions.append(HostVersion(self.revision, new, digest, change))
        return True

    def _index(self, host: str, program: HostProgram) -> None:
        """Record what `program` was assembled from (the objects seen now)."""
        compiler = self.compiler
        current = self._versions.get(host)
        old = current[-1].program if current else _empty(host)
        for name in old.address_sets.keys() - program.address_sets.keys():
            self._set_users[name].discard(host)
        for name in old.chains.keys() - program.chains.keys():
            self._chain_users[name].discard(host)
        for name, s in program.address_sets.items():
            if name not in old.address_sets:
                self._set_users[name].add(host)
            self._seen_sets[name] = s
        if compiler is None:
            self._members[host] = frozenset()
            return
        for name in program.chains:
            if name not in old.chains:
                self._chain_users[name].add(host)
            self._seen_chains[name] = compiler.chain(name)
        members = frozenset(compiler.by_host.get(host, ()))
        self._members[host] = members
        for wk in members:
            self._seen_endpoints[wk] = compiler.endpoints(wk)


@dataclass
class _Changes:
    sets: dict[str, AddressSet | None] = field(default_factory=dict)  # None: gone
    chains: dict[str, CompiledChain | None] = field(default_factory=dict)  # None: gone
    structural: set[str] = field(default_factory=set)  # hosts to re-assemble whole
    content: set[str] = field(default_factory=set)  # hosts to patch


@dataclass
class _SharedChanges:
    """The element changes of every changed set and block, computed once for the fleet:
    sets: name -> (new set, its element change); chains: name -> (new compiled chain, the
    one it replaces, element changes of its blocks that kept their names)."""

    sets: dict[str, tuple[AddressSet, ElementChange]]
    chains: dict[str, tuple[CompiledChain, CompiledChain, list[ElementChange]]]

    @classmethod
    def of(
        cls,
        changes: _Changes,
        seen_sets: Mapping[str, AddressSet],
        seen_chains: Mapping[str, CompiledChain],
    ) -> _SharedChanges:
        sets = {}
        for name, new in changes.sets.items():
            old = seen_sets.get(name)
            if new is not None and old is not None:
                a, b = new.elements(), old.elements()
                sets[name] = (new, ElementChange(name, a - b, b - a))
        chains = {}
        for name, compiled in changes.chains.items():
            prev = seen_chains.get(name)
            if compiled is None or prev is None:
                continue
            deltas = []
            for block_name, block in compiled.blocks.items():
                before = prev.blocks.get(block_name)
                if before is not None and block is not before and block.elements != before.elements:
                    now, then = block.elements, before.elements
                    deltas.append(ElementChange(block_name, now - then, then - now))
            chains[name] = (compiled, prev, deltas)
        return cls(sets, chains)


LARGE = 0.2  # a change of more than this share of the workloads is compiled from scratch


def _large(old: Catalog, new: Catalog) -> bool:
    """Whether the change is cheaper to compile from scratch than incrementally."""
    if old.workloads is new.workloads:
        return False
    size = max(len(old.workloads), len(new.workloads), 1)
    gone = len(old.workloads.keys() - new.workloads.keys())
    added = len(new.workloads.keys() - old.workloads.keys())
    return gone + added > LARGE * size and gone + added > 50


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
