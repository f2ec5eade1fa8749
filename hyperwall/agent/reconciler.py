"""The host agent's reconcile step: read desired and actual, converge. One key at a time.

Keys: `policy` (the desired program may have changed: apply the delta), `resync` (timer:
read the kernel table back and repair drift). Either way the work is the same shape: the
desired program from the source (the manager's program, or one compiled here from a policy
folder: `compiling.LocalCompiler`), then the data plane (`dataplane.protocol.Dataplane`)
converges the kernel to it. Invalid input never reaches the kernel: the last valid program
stays.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hyperwall.agent.status import AgentStatus, write_status
from hyperwall.compiler.program import HostProgram
from hyperwall.compiler.serialize import program_hash
from hyperwall.dataplane.protocol import ApplyResult, Dataplane
from hyperwall.policy.errors import DocumentsInvalid

# The desired program and a digest naming it (changes whenever the program may have);
# raises DocumentsInvalid (keep the last valid program) or OSError (nothing usable yet).
ProgramLoader = Callable[[], tuple[HostProgram, str]]


@dataclass
class Reconciler:
    host: str
    load: ProgramLoader
    backend: Dataplane
    status_path: Path
    policy_hash: str | None = None
    program: HostProgram | None = None
    synced: bool = False  # first full sync done (nothing is changed in the kernel before)

    def desired(self) -> tuple[HostProgram | None, str | None]:
        """The latest valid program (the last good one if the input is now invalid)."""
        try:
            program, digest = self.load()
        except DocumentsInvalid as exc:
            return self.program, f"documents invalid, keeping the last valid policy: {exc}"
        except OSError as exc:
            return self.program, f"no desired state: {exc}"
        self.policy_hash = digest
        self.program = program
        return self.program, None

    def _close_if_empty(self) -> None:
        """No valid policy yet and no table in the kernel (fresh boot): install the skeleton
        with no endpoints, so every VM interface is closed until the policy arrives."""
        try:
            if not self.backend.read_actual()[1]:
                self.backend.rebuild(HostProgram(self.host, {}, {}, {}, {}))
        except Exception:  # reported with the next status; retried with backoff
            pass

    def reconcile(self, key: str) -> bool:
        """Converge; True on success (the caller requeues with backoff on False)."""
        program, problem = self.desired()
        result: ApplyResult | None = None
        error = problem
        if program is None and not self.synced:
            self._close_if_empty()
        if program is not None:
            try:
                if key == "resync" or not self.synced:
                    result = self.backend.sync(program)
                    self.synced = True
                else:
                    result = self.backend.apply(program)
            except Exception as exc:  # reported in the status, retried with backoff
                error = f"apply failed: {exc}"
        converged = result is not None and error is None
        write_status(
            self.status_path,
            AgentStatus(
                host=self.host,
                pid=os.getpid(),
                converged=converged,
                program_hash=program_hash(self.backend.program) if self.backend.program else None,
                policy_hash=self.policy_hash,
                error=error,
                mode=result.mode if result else None,
                commands=result.commands if result else 0,
                seconds=result.seconds if result else 0.0,
                updated=time.time(),
                endpoints=len(self.backend.program.endpoints) if self.backend.program else 0,
            ),
        )
        return result is not None
