"""Live migration in a lab whose agents follow a manager (issue 11): the move begins in the
manager (`POST /v1/migrations`), which serves the destination's agent the program with the
VM placed there, so the destination is ready before the VM moves; the agents hand the
connection state over; the Workload's new host is applied in the manager and the move
ends. A held TCP connection survives the move there and back.

db-1 (hv2) serves app-2 (hv2) on tcp/5432; it moves to hv1 and back. The manager runs in
the root namespace on loopback; the agents in the host namespaces reach it through a
loopback relay (as `hyperwall demo` does).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hyperwall.client import ManagerClient
from hyperwall.lab import Lab
from hyperwall.lab.errors import LabError
from hyperwall.lab.relay import LoopbackRelay
from hyperwall.lab.topology import LabPlan
from tests.agent.test_manager_source import RealManager, example_documents

from .conftest import EXAMPLES, lab_marks, lab_namespaces
from .test_migrate_state import APP, AWAY, DB, HOME, echoes, open_tcp

pytestmark = lab_marks()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, RealManager]]:
    tmp = tmp_path_factory.mktemp("hwg-manager")
    manager = RealManager(tmp)
    relays: list[LoopbackRelay] = []
    lab = Lab(f"hwg{os.getpid() % 100_000}m")
    lab.down()
    try:
        manager.start()
        manager.commit(example_documents())
        tokens: dict[str, Path] = {}
        for host in ("hv1", "hv2", "hv3"):
            tokens[host] = tmp / f"{host}.token"
            tokens[host].write_text(manager.agent_token(host))
            tokens[host].chmod(0o600)

        def relay(plan: LabPlan) -> None:
            relays.append(LoopbackRelay([h.ns for h in plan.hosts], manager.port))

        lab.up([EXAMPLES], server=manager.url, token_files=tokens, before_agents=relay)
        yield lab, manager
    finally:
        lab.down()
        for r in relays:
            r.close()
        manager.stop()
        assert lab_namespaces(lab) == []


def host_in_manager(manager: RealManager) -> str:
    with ManagerClient(manager.url, manager.admin) as client:
        return str(client.document("Workload", "db-1", "acme")["spec"]["host"])


def test_a_held_connection_survives_moves_the_manager_knows_of(
    fleet: tuple[Lab, RealManager],
) -> None:
    lab, manager = fleet
    held = open_tcp(lab, APP, DB, 5432)
    try:
        for to in (AWAY, HOME):
            report = lab.migrate(DB, to, state=True, token=manager.admin)
            assert report.errors == ()
            steps = [name for name, _ in report.steps_ms]
            assert steps[:3] == ["begin", "incoming", "precopy"]
            incoming = json.loads(report.handover[0].partition(": ")[2])
            assert incoming["ready"] and incoming["endpoints"] >= 1  # before the VM moved
            assert echoes(held, f"after the move to {to}".encode())
            assert host_in_manager(manager) == to
            with ManagerClient(manager.url, manager.admin) as client:
                assert client.request("GET", "/v1/migrations") == []
    finally:
        held.close()


def test_a_move_the_manager_refuses_moves_nothing(fleet: tuple[Lab, RealManager]) -> None:
    lab, manager = fleet

    agent = manager.agent_token(AWAY)  # may not change documents: no move
    with pytest.raises(LabError, match="did not begin the move"):
        lab.migrate(DB, AWAY, state=True, token=agent)
    assert lab.catalog().workloads[DB].host == HOME and host_in_manager(manager) == HOME
