"""The nftables data plane: applies host programs to the kernel, incrementally and atomically.

Counterpart of `compiler.delta` (what changed) and `nft.plan` (how to say it to the kernel).
Steady path: the program delta is rendered object by object into a `Step` (the desired
table as a shallow copy of the current one, plus exact element changes) and only the touched
names are planned, so a change costs what it touches, not the size of the sets it touches.
Startup and recovery: `sync` reads the table back, compares everything and converges; it
never touches other tables. After a failed incremental apply it syncs; after a failed sync it
rebuilds the whole table in one transaction (`add table; delete table; add everything`).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field

from hyperwall.compiler.delta import ProgramDelta, diff
from hyperwall.compiler.program import Chain, HostProgram, LookupRule
from hyperwall.dataplane.nft import plan as planner
from hyperwall.dataplane.nft.blocks import (
    Local,
    block_clip,
    block_set_specs,
    clip_range,
    local_addresses,
    render_block_set,
    split_element,
)
from hyperwall.dataplane.nft.kernel_api import Kernel
from hyperwall.dataplane.nft.netlink import exact_keys
from hyperwall.dataplane.nft.policy_chains import passing_chains, render_policy_chain
from hyperwall.dataplane.nft.readback import TornListing, parse_table
from hyperwall.dataplane.nft.render import (
    Options,
    render_address_set,
    render_endpoint,
    render_program,
)
from hyperwall.dataplane.nft.table import (
    FAMILY,
    SHAPES,
    Element,
    SetSpec,
    TableState,
    address_set_name,
    block_set_name,
)
from hyperwall.dataplane.protocol import ApplyResult, Mode, apply_by_change

BULK_ELEMENTS = 20_000  # a fresh table with more exact block elements than this loads
BULK_SET = 1_000  # its sets of this many or more through netlink (`_load_big_sets`)
LISTING_ATTEMPTS = 8  # a torn listing (`readback.TornListing`) is taken again, then it fails
ENDPOINT_SETS = (
    *("own4", "own6", "from4", "from6", "to4", "to6", "vm_ifaces"),
    *("br:spoof4", "br:spoof6", "br:ports", "egress_map", "ingress_map4", "ingress_map6"),
)


class NftBackend:
    """The `Dataplane` of the agent: our tables in the kernel, through `kernel`."""

    def __init__(self, kernel: Kernel, options: Options | None = None) -> None:
        self.kernel = kernel
        self.options = options or Options()
        self.program: HostProgram | None = None
        self.state: TableState | None = None  # what the kernel holds after our last success
        self.local: Local | None = None  # the addresses block sets are clipped to there

    def _local(self, program: HostProgram) -> Local | None:
        return local_addresses(program) if self.options.clip else None

    # -- full paths ---------------------------------------------------------------------

    def read_actual(self) -> tuple[TableState, set[str]]:
        """Our tables as the kernel has them, and which of the families exist. A listing
        torn by a concurrent hash-table resize (`TornListing`) is taken again."""
        for attempt in range(LISTING_ATTEMPTS - 1):
            try:
                return self._read_once()
            except TornListing:
                time.sleep(0.05 * (attempt + 1))
        return self._read_once()

    def _read_once(self) -> tuple[TableState, set[str]]:
        state = TableState()
        present: set[str] = set()
        for family, prefix in (("inet", ""), ("bridge", planner.BRIDGE)):
            listing = self.kernel.list_table(family)
            if listing is not None:
                present.add(family)
                parse_table(listing, prefix, state)
        return state, present

    def sync(self, program: HostProgram) -> ApplyResult:
        """Read the table back, compare all of it with `program`, converge (repairs drift)."""
        start = time.perf_counter()
        actual, present = self.read_actual()
        desired = render_program(program, self.options)
        if not present:  # a fresh host: the big block sets first, in bulk
            loaded = self._load_big_sets(desired)
            if loaded is not None:
                actual, present = loaded, {FAMILY}
        commands = planner.plan(actual, desired, existing=present)
        self.kernel.run(commands)
        self.state, self.program, self.local = desired, program, self._local(program)
        mode: Mode = "sync" if commands else "noop"
        return ApplyResult(mode, len(commands), time.perf_counter() - start)

    def _load_big_sets(self, desired: TableState) -> TableState | None:
        """Loads the big exact block sets of a table that does not exist yet, and returns
        what the kernel then holds: the table and the sets (empty) through libnftables, then
        their elements as one nfnetlink batch (`Kernel.add_elements`), which skips
        libnftables' parsing of each element.

        Only for a fresh table: until the rest of the table follows in one transaction, the
        kernel has sets that no rule refers to and no base chain, which filters nothing,
        as before the table existed; an agent that dies in between reads the sets back on
        its next sync and adds what is missing. None if the sets are too small to matter."""
        big = [
            n
            for n in desired.sets
            if n.startswith("k_")
            and not desired.sets[n].interval
            and len(desired.elements[n]) >= BULK_SET
        ]
        if sum(len(desired.elements[n]) for n in big) < BULK_ELEMENTS:
            return None
        specs = [desired.sets[n] for n in big]
        self.kernel.run(
            [planner.table_command("add", FAMILY), *(planner.set_command(s) for s in specs)]
        )
        self.kernel.add_elements([(s.name, exact_keys(s, desired.elements[s.name])) for s in specs])
        loaded = TableState()
        for spec in specs:
            loaded.put_set(spec, desired.elements[spec.name])
        return loaded

    def rebuild(self, program: HostProgram) -> ApplyResult:
        start = time.perf_counter()
        desired = render_program(program, self.options)
        _, present = self.read_actual()
        commands = planner.rebuild(desired, present)
        self.kernel.run(commands)
        self.state, self.program, self.local = desired, program, self._local(program)
        return ApplyResult("rebuild", len(commands), time.perf_counter() - start)

    # -- steady path --------------------------------------------------------------------

    def apply(self, program: HostProgram) -> ApplyResult:
        """Converge the kernel to `program`: incremental, else sync, else rebuild."""
        return apply_by_change(self, program, lambda: self._incremental(program))

    def _incremental(self, program: HostProgram) -> ApplyResult:
        """Send the change from the last program applied to `program` (`NftError` if the
        kernel refuses it: then nothing changed)."""
        assert self.state is not None and self.program is not None
        start = time.perf_counter()
        delta = diff(self.program, program)
        local = self.local
        if delta.endpoints_put or delta.endpoints_delete:
            local = self._local(program)
        step = self._step(delta, program, local)
        commands = planner.plan(self.state, step.state, only=step.touched, elements=step.elements)
        self.kernel.run(commands)
        self.state, self.program, self.local = step.commit(), program, local
        mode: Mode = "incremental" if commands else "noop"
        return ApplyResult(mode, len(commands), time.perf_counter() - start)

    def _step(self, delta: ProgramDelta, program: HostProgram, local: Local | None) -> Step:
        """The table after `delta`, re-rendering only what it touches; block sets clipped to
        `local`, the new program's own addresses."""
        assert self.state is not None and self.program is not None
        old = self.program
        step = Step(
            TableState(dict(self.state.sets), dict(self.state.elements), dict(self.state.chains))
        )
        state, touched = step.state, step.touched
        for change in delta.address_elements:
            for family in (4, 6):
                step.change(
                    address_set_name(change.name, family),
                    {i for f, i in change.removed if f == family},
                    {i for f, i in change.added if f == family},
                )
        for name in delta.address_sets_delete:
            for family in (4, 6):
                step.drop(address_set_name(name, family))
        for s in delta.address_sets_put:
            for spec, elements in render_address_set(s):
                step.put(spec, elements)
        reclip = self._reclipped(delta, program, local)
        for change in delta.block_elements:
            if change.name in reclip:
                continue  # put whole below
            clip = block_clip(change.name, local)
            removed: dict[str, set[Element]] = {}
            added: dict[str, set[Element]] = {}
            for e in change.removed:
                for shape, value in split_element(e, clip):
                    removed.setdefault(shape, set()).add(value)
            for e in change.added:
                for shape, value in split_element(e, clip):
                    added.setdefault(shape, set()).add(value)
            for shape in removed.keys() | added.keys():
                step.change(
                    block_set_name(change.name, shape),
                    removed.get(shape, set()),
                    added.get(shape, set()),
                )
        for b in (*delta.block_sets_put, *(program.block_sets[n] for n in sorted(reclip))):
            for spec, elements in render_block_set(b, local):
                step.put(spec, elements)
        for name in delta.block_sets_delete:
            for spec in block_set_specs(name):
                step.drop(spec.name)
        for name in (*delta.chains_delete, *(c.name for c in delta.chains_put)):
            if name in old.chains:
                for gone in render_policy_chain(old.chains[name]):
                    state.chains.pop(gone.name, None)
                    touched.add(gone.name)

        def shapes_of(block: str) -> frozenset[str]:
            return frozenset(s for s in SHAPES if step.holds(block_set_name(block, s)))

        refilled = self._refilled(delta, program, shapes_of, reclip)
        for chain in (*delta.chains_put, *refilled):
            for made in render_policy_chain(chain, shapes_of):
                state.chains[made.name] = made
                touched.add(made.name)
        # Which chains can pass changes only with the chains (and is a walk of all of them).
        chains_changed = bool(delta.chains_put or delta.chains_delete)
        passing = passing_chains(program) if chains_changed else None
        if passing is not None and passing != passing_chains(old):
            self._render_endpoints(step, program, passing)
        elif delta.endpoints_put or delta.endpoints_delete:
            self._render_endpoints(step, program, passing or passing_chains(program))
        return step

    def _reclipped(
        self, delta: ProgramDelta, program: HostProgram, local: Local | None
    ) -> set[str]:
        """Blocks (kept by `delta`) whose clipped elements change because the host's own
        addresses did: those with an element whose clipped side holds an address that came
        or went. A scan of the blocks' elements, only when a VM came, left or got another
        address."""
        if local is None or self.local is None or local == self.local:
            return set()
        moved = {f: tuple(sorted(set(local.of(f)) ^ set(self.local.of(f)))) for f in (4, 6)}
        removed = {c.name: c.removed for c in delta.block_elements}
        put = {b.name for b in delta.block_sets_put}
        out = set()
        for name, block in program.block_sets.items():
            clip = block_clip(name, local)
            if clip is None or name in put:
                continue
            for e in (*block.elements, *removed.get(name, ())):
                bounds = clip_range(e, clip)
                if bounds is None:
                    continue  # any address: never clipped
                low, high = bounds
                addresses = moved[e[0]]
                i = bisect_left(addresses, low)
                if i < len(addresses) and addresses[i] <= high:
                    out.add(name)
                    break
        return out

    def _refilled(
        self,
        delta: ProgramDelta,
        program: HostProgram,
        shapes_of: Callable[[str], frozenset[str]],
        reclip: set[str],
    ) -> list[Chain]:
        """Chains not put by `delta` that look up a block whose empty shapes it changed."""
        assert self.state is not None
        before = self.state.elements
        blocks = {c.name for c in delta.block_elements} | {b.name for b in delta.block_sets_put}
        blocks |= reclip
        changed = {
            b
            for b in blocks
            if shapes_of(b) != {s for s in SHAPES if before.get(block_set_name(b, s))}
        }
        if not changed:
            return []
        put = {c.name for c in delta.chains_put}
        return [
            chain
            for name, chain in program.chains.items()
            if name not in put
            and any(isinstance(i, LookupRule) and i.block in changed for i in chain.items)
        ]

    def _render_endpoints(self, step: Step, program: HostProgram, passing: frozenset[str]) -> None:
        """Re-render every endpoint's dispatch (a host has tens to hundreds)."""
        state = step.state
        sets = [n for n in ENDPOINT_SETS if n in state.sets]
        step.touched |= {n for n in state.chains if n[:2] in ("d_", "t_")}
        for n in list(state.chains):
            if n[:2] in ("d_", "t_"):
                del state.chains[n]
        fresh: dict[str, set[Element]] = {n: set() for n in sets}
        for ep in program.endpoints.values():
            chains, elements = render_endpoint(ep, self.options, passing)
            for c in chains:
                state.chains[c.name] = c
                step.touched.add(c.name)
            for table, values in elements.items():
                fresh[table] |= values
        for table, values in fresh.items():
            step.put(state.sets[table], values)


@dataclass
class Step:
    """One steady-path change of the table, built on a shallow copy of the current state.

    Sets and chains that change whole are replaced in `state`. A set whose elements change
    keeps sharing its element set with the current state until `commit`, which changes it in
    place: copying a 20,000-element set to add one element would cost more than the change.
    `elements` holds those changes exactly (what to delete is there, what to add is not), so
    `plan` needs no set difference either."""

    state: TableState
    touched: set[str] = field(default_factory=set)
    elements: dict[str, planner.ElementChange] = field(default_factory=dict)
    fresh: set[str] = field(default_factory=set)  # sets put whole by this step

    def put(self, spec: SetSpec, elements: set[Element]) -> None:
        self.elements.pop(spec.name, None)
        self.state.put_set(spec, elements)
        self.touched.add(spec.name)
        self.fresh.add(spec.name)

    def drop(self, name: str) -> None:
        self.elements.pop(name, None)
        self.fresh.discard(name)
        self.state.sets.pop(name, None)
        self.state.elements.pop(name, None)
        self.touched.add(name)

    def change(self, name: str, removed: set[Element], added: set[Element]) -> None:
        """Remove then add elements of a set (a set that was put is changed directly)."""
        self.touched.add(name)
        if name not in self.state.sets:
            return  # only in a set dropped by the same delta
        current = self.state.elements[name]
        if name in self.fresh:  # put by this step: a set of its own
            current -= removed - added
            current |= added
            return
        gone, new = self.elements.get(name, (set(), set()))
        for e in removed:
            if e in new:
                new.discard(e)
            elif e in current:
                gone.add(e)
        for e in added:
            if e in gone:
                gone.discard(e)
            elif e not in current:
                new.add(e)
        self.elements[name] = (gone, new)

    def holds(self, name: str) -> bool:
        """Whether set `name` has elements once this step is committed."""
        current = self.state.elements.get(name)
        if current is None:
            return False
        gone, new = self.elements.get(name, ((), ()))
        return len(current) - len(gone) + len(new) > 0

    def commit(self) -> TableState:
        """The state after the kernel accepted the change (element sets changed in place)."""
        for name, (gone, new) in self.elements.items():
            current = self.state.elements[name]
            current -= gone
            current |= new
        return self.state
