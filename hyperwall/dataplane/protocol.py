"""The data plane as the agent sees it (`Dataplane`): read what the kernel holds, converge
it to a host program. The seam between the reconcile loop (`agent.reconciler`) and the
implementations: `nft.backend.NftBackend` (the kernel's nftables) and
`memory.MemoryDataplane` (a model of it, for fast tests). Pure.

tests/dataplane/test_dataplane_contract.py holds both to the same contract.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from hyperwall.compiler.program import HostProgram
from hyperwall.dataplane.nft.kernel_api import NftError
from hyperwall.dataplane.nft.table import TableState

# How a call converged: nothing to do, the change alone, a compare of the whole table, or
# the table replaced in one transaction.
Mode = Literal["noop", "incremental", "sync", "rebuild"]


@dataclass(frozen=True, slots=True)
class ApplyResult:
    mode: Mode
    commands: int
    seconds: float


class Dataplane(Protocol):
    @property
    def program(self) -> HostProgram | None:
        """The program the kernel holds after the last success (None before the first)."""

    def read_actual(self) -> tuple[TableState, set[str]]:
        """Our tables as the kernel has them, and which of their families exist."""

    def sync(self, program: HostProgram) -> ApplyResult:
        """Read the table back, compare all of it with `program`, converge (repairs drift)."""

    def apply(self, program: HostProgram) -> ApplyResult:
        """Converge to `program`: by the change since the last one where it can, else as
        `sync`, else as `rebuild`."""

    def rebuild(self, program: HostProgram) -> ApplyResult:
        """Replace our tables with `program`'s in one transaction."""


def apply_by_change(
    dataplane: Dataplane, program: HostProgram, incremental: Callable[[], ApplyResult]
) -> ApplyResult:
    """`Dataplane.apply` as both implementations do it: nothing if `program` is the one
    applied last, a sync if none was, else the change (`incremental`); a refused transaction
    falls back to a sync, a refused sync to a rebuild."""
    if dataplane.program is program:
        return ApplyResult("noop", 0, 0.0)
    try:
        if dataplane.program is None:
            return dataplane.sync(program)
        try:
            return incremental()
        except NftError:
            return dataplane.sync(program)
    except NftError:
        return dataplane.rebuild(program)
