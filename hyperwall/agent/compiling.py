"""The desired program compiled on the host from a documents source (a policy folder).

With `--policy-dir` the agent is its own control plane: it validates the documents
(`PolicyDir.load`) and compiles its host's program with an incremental `FleetCompiler`
kept across changes, so a small edit costs a small recompile. (With `--server` the manager
compiles and the agent receives the program: `manager_source`.)
"""

from __future__ import annotations

from collections.abc import Callable

from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.program import HostProgram
from hyperwall.policy.model import Catalog


class LocalCompiler:
    def __init__(self, load: Callable[[], tuple[Catalog, str]], host: str) -> None:
        self.load = load
        self.host = host
        self.compiler: FleetCompiler | None = None
        self.digest: str | None = None
        self.program: HostProgram | None = None

    def __call__(self) -> tuple[HostProgram, str]:
        """The host's program for the latest valid documents, and their digest; raises
        what the documents source raises (DocumentsInvalid, OSError)."""
        catalog, digest = self.load()
        if digest != self.digest or self.program is None:
            if self.compiler is None:
                self.compiler = FleetCompiler(catalog.config, catalog.workloads.values())
            else:
                self.compiler.set_config(catalog.config)
                for key in set(self.compiler.workloads) - set(catalog.workloads):
                    self.compiler.remove_workload(key)
                for w in catalog.workloads.values():
                    self.compiler.set_workload(w)
            self.digest = digest
            self.program = self.compiler.host_program(self.host)
        return self.program, digest
