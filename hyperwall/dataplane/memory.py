"""A `Dataplane` in memory: keeps the program it was given and a model of the kernel's
tables, for fast tests of the agent (no root, no namespace). Pure.

Counterpart of `nft.backend.NftBackend`, held to the same contract
(tests/dataplane/test_dataplane_contract.py). The model "kernel" is a `TableState` in the
form `NftBackend.read_actual` returns; every call renders the whole program and converges
the model with the commands `nft.plan` would send, so a result's mode and command count are
what a full compare would give (the steady path's smaller transactions are not modelled).
An incremental apply is planned on what this data plane last installed, as `NftBackend`'s
is; the model kernel refuses it when its table is no longer that (stricter than the kernel,
which refuses only what no longer fits), and the apply falls back to a sync, then a rebuild.
Tests may change `table` to model drift, or set `refuse` to make the next calls fail.
"""

from __future__ import annotations

import time

from hyperwall.compiler.program import HostProgram
from hyperwall.dataplane.nft import plan as planner
from hyperwall.dataplane.nft.kernel_api import NftError
from hyperwall.dataplane.nft.render import Options, render_program
from hyperwall.dataplane.nft.table import TableState
from hyperwall.dataplane.protocol import ApplyResult, Mode, apply_by_change


class MemoryDataplane:
    """Implements `protocol.Dataplane` on a model kernel (`table`, `present`)."""

    def __init__(self, options: Options | None = None) -> None:
        self.options = options or Options()
        self.program: HostProgram | None = None
        self.table = TableState()  # the model kernel's objects (bridge ones named "br:...")
        self.installed: TableState | None = None  # what our last success left there
        self.present: set[str] = set()  # the families of our tables it holds
        self.refuse = 0  # this many more transactions fail with NftError (nothing applied)

    def read_actual(self) -> tuple[TableState, set[str]]:
        return _copy(self.table), set(self.present)

    def sync(self, program: HostProgram) -> ApplyResult:
        start = time.perf_counter()
        desired = render_program(program, self.options)
        commands = planner.plan(self.table, desired, existing=self.present)
        self._run(len(commands), desired, program)
        mode: Mode = "sync" if commands else "noop"
        return ApplyResult(mode, len(commands), time.perf_counter() - start)

    def apply(self, program: HostProgram) -> ApplyResult:
        return apply_by_change(self, program, lambda: self._incremental(program))

    def _incremental(self, program: HostProgram) -> ApplyResult:
        if self.table != self.installed:
            raise NftError("the table is not what the change was planned on")
        result = self.sync(program)
        mode: Mode = "incremental" if result.commands else "noop"
        return ApplyResult(mode, result.commands, result.seconds)

    def rebuild(self, program: HostProgram) -> ApplyResult:
        start = time.perf_counter()
        desired = render_program(program, self.options)
        commands = planner.rebuild(desired, self.present)
        self._run(len(commands), desired, program)
        self.present = planner.families(desired)  # the others were deleted with the rest
        return ApplyResult("rebuild", len(commands), time.perf_counter() - start)

    def _run(self, commands: int, desired: TableState, program: HostProgram) -> None:
        """One transaction that leaves the model kernel holding `desired` (all or nothing)."""
        if commands and self.refuse:
            self.refuse -= 1
            raise NftError("refused (MemoryDataplane.refuse)")
        self.table = _copy(desired)  # no commands: the table already compares equal to it
        self.present |= planner.families(desired)  # a sync deletes no table
        self.program, self.installed = program, desired


def _copy(t: TableState) -> TableState:
    return TableState(dict(t.sets), {n: set(e) for n, e in t.elements.items()}, dict(t.chains))
