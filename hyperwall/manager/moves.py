"""Workloads in live migration, and the destination's program while they move.

A move is begun (`POST /v1/migrations`) before the VM leaves its host and ended (`DELETE`)
once the documents place it on the destination. Meanwhile the destination's agent is served
`compiler.moving.moving_program`: the same documents with the VM placed on the destination,
so its rules are in the destination's kernel before the VM runs there; the source keeps the
ordinary program (the documents still place the VM there) until the documents change. The
orchestrator (`lab migrate`, a libvirt hook) drives the order: begin, the agents' handover,
the switchover, the Workload's `spec.host` applied, end (docs/design/migration.md,
"Agents following a manager").

The moves live in this manager's memory, not in the store: a move lasts seconds and belongs
to the orchestrator that began it. If the manager restarts during a move, the move is gone:
the destination's program is the ordinary one again, without the VM; a VM that already
runs there is then not enforced as known and its traffic is dropped (unknown interfaces
fail closed) until the Workload's new host is applied. With several replicas, begin the move
on the replica the destination's agent follows.

Counterpart of `manager.fleetwatch` (the programs; a move pokes the agents' long-polls)
and `agent.manager_source` (which takes the program like any other).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from hyperwall.compiler.digest import program_digest
from hyperwall.compiler.fleet_programs import FleetPrograms, HostVersion
from hyperwall.compiler.moving import moving_program


@dataclass(frozen=True, slots=True)
class Move:
    workload: str  # its key: tenant/name
    source: str  # where the documents placed it when the move began
    dest: str


class Moves:
    """The moves in progress, and the destinations' programs (computed on the fleet thread,
    kept per revision and set of moves)."""

    def __init__(self) -> None:
        self.moves: dict[str, Move] = {}
        self.generation = 0  # bumped by every begin and end
        self._programs: dict[str, tuple[tuple[int, int], HostVersion]] = {}
        self._lock = threading.Lock()

    def begin(self, move: Move) -> None:
        with self._lock:
            self.moves[move.workload] = move
            self.generation += 1

    def end(self, workload: str) -> Move | None:
        with self._lock:
            move = self.moves.pop(workload, None)
            self.generation += 1
            return move

    def into(self, host: str) -> bool:
        """Whether a move to `host` is in progress (its program is not the ordinary one)."""
        return any(m.dest == host for m in list(self.moves.values()))

    def program(self, host: str, programs: FleetPrograms) -> HostVersion | None:
        """`host`'s program while workloads move to it, None if none does. Call on the
        fleet thread (it reads the fleet's catalog)."""
        with self._lock:
            moves = {k: m.dest for k, m in self.moves.items() if m.dest == host}
            stamp = (programs.revision, self.generation)
        catalog = programs.catalog
        if not moves or catalog is None:
            return None
        kept = self._programs.get(host)
        if kept is not None and kept[0] == stamp:
            return kept[1]
        program = moving_program(catalog, moves, host)
        version = HostVersion(programs.revision, program, program_digest(program))
        self._programs[host] = (stamp, version)
        return version
