"""End to end: `hyperwall manager` + agents with `--server` + a lab of namespaces.

The lab (`hyperwall.lab.Lab`) builds hosts and VMs from the examples without its own agents
(`agents_enabled=False`); this test starts the manager inside host hv1's namespace
(listening on all its addresses: hv1's agent reaches it on loopback, hv2's over the
underlay) and one `hyperwall agent --server` per host namespace. Then real traffic:

- the policy applied through the manager is enforced (probes match `examples/probes.tsv`);
- a label change through the manager moves web-1 from the web to the app group: the
  probes that change follow it, and the manager's status reports every host in sync;
- with the manager killed, enforcement stays and the agents keep running.

Every process is stopped and the lab removed afterwards, also on failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hyperwall.agent.hits import read_report
from hyperwall.lab import Lab
from hyperwall.lab.agents import expected_hashes
from hyperwall.policy.catalog import build_catalog
from hyperwall.policy.errors import Source
from tests.agent.test_manager_source import (
    AgentProcess,
    RealManager,
    example_documents,
    relabel,
    wait_for,
)
from tests.lab.conftest import lab_marks

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
VERDICT_TO_RESULT = {"allow": "allowed", "drop": "blocked", "reject": "rejected"}

pytestmark = lab_marks()


def probe_rows() -> list[tuple[str, str, str, str]]:
    rows = []
    for line in (EXAMPLES / "probes.tsv").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            src, dst, service, verdict = line.split("\t")[:4]
            rows.append((src, dst, service, VERDICT_TO_RESULT[verdict]))
    return rows


def hashes(docs: list[dict[str, Any]], hosts: list[str]) -> dict[str, str]:
    catalog = build_catalog((d, Source("e2e", i)) for i, d in enumerate(docs))
    return expected_hashes(catalog, hosts)


class Fleet:
    """The lab, the manager in hv1's namespace and one agent per host."""

    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.lab = lab
        plan = lab.plan()
        self.hosts = {h.name: h.ns for h in plan.hosts}
        first = sorted(self.hosts)[0]
        (tmp / "manager").mkdir()
        self.manager = RealManager(tmp / "manager", self.hosts[first], listen="0.0.0.0")
        # hosts are numbered by sorted name on the underlay: 169.254.100.k
        self.remote_url = f"http://169.254.100.1:{self.manager.port}"
        self.first = first
        self.agents: dict[str, AgentProcess] = {}
        self.tmp = tmp
        # more agent options; hit counters read every second (`hyperwall stats`)
        self.extra: Callable[[str], list[str]] = lambda host: ["--hits-seconds", "1"]

    def start(self) -> None:
        self.manager.start()
        for host, ns in self.hosts.items():
            url = self.manager.url if host == self.first else self.remote_url
            token = self.manager.agent_token(host)
            agent = AgentProcess(ns, self.manager, self.tmp / host, host, url, token)
            agent.extra = self.extra(host)
            self.agents[host] = agent
            agent.start()

    def converge(self, docs: list[dict[str, Any]], revision: int) -> None:
        """Every agent runs the program of `docs` and the manager has it reported."""
        for host, digest in hashes(docs, list(self.hosts)).items():
            self.agents[host].wait_program(digest)

            def reported(host: str = host, digest: str = digest) -> bool:
                s = self.manager.status(host)
                return bool(
                    s and s["revision"] == revision and s["programHash"] == digest
                ) and bool(s and s["state"] == "in-sync")

            wait_for(reported, f"{host} reported in sync at revision {revision}")

    def stop(self) -> None:
        for agent in self.agents.values():
            agent.stop()
        self.manager.stop()


@contextlib.contextmanager
def running_fleet(name: str, tmp: Path) -> Iterator[Fleet]:
    """A lab of the examples named `name`, the manager and an agent per host; all removed
    afterwards, also on failure (shared with `test_live_trace`)."""
    lab = Lab(name)
    lab.down()
    fleet: Fleet | None = None
    try:
        lab.up([EXAMPLES], agents_enabled=False)
        for host in lab.plan().hosts:  # the manager listens on hv1's loopback too
            subprocess.run(["ip", "-n", host.ns, "link", "set", "lo", "up"], check=True)
        fleet = Fleet(lab, tmp)
        fleet.start()
        yield fleet
    finally:
        if fleet is not None:
            fleet.stop()
        lab.down()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(f"m{os.getpid() % 10_000_000}", tmp_path) as fleet:
        yield fleet


def assert_stats_sum_the_hosts(fleet: Fleet) -> None:
    """The manager's `GET /v1/stats` is, rule by rule, the sum of what the agents counted
    (their `hits.json`), and a rule hit at both ends of a cross-host probe counts 2 hosts."""

    def summed() -> bool:
        files = {h: read_report(a.tmp / "state" / "hits.json") for h, a in fleet.agents.items()}
        body = fleet.manager._http("GET", "/v1/stats")
        if body["hosts"] != {h: read for h, (read, _) in files.items()}:
            return False  # a reading not reported yet
        for row in body["rules"]:
            key = row["rule"] if row["rule"] != "default" else f"default@{row['tenant']}"
            counted = [rules[key]["packets"] for _, rules in files.values() if key in rules]
            if row["packets"] != sum(counted) or row["hosts"] != sum(1 for c in counted if c):
                return False
        both = {r["rule"]: r["hosts"] for r in body["rules"]}
        return both.get("acme/shop/admin-ssh") == 2  # jump-1 (hv1) -> web-2 (hv2)

    wait_for(summed, "the manager's stats to sum both hosts' hit counters")


def test_label_change_rollback_and_manager_loss(fleet: Fleet) -> None:
    lab, manager = fleet.lab, fleet.manager
    docs = example_documents()
    first = manager.commit(docs)
    fleet.converge(docs, first)
    rows = probe_rows()
    assert lab.probe_many([r[:3] for r in rows]) == [r[3] for r in rows]
    assert_stats_sum_the_hosts(fleet)

    # web-1 leaves the web tier for the app tier: it may now reach the database, and the
    # load balancer no longer reaches it
    moved = relabel(docs, "web-1", "app")
    probes = [("web-1", "db-1", "postgres"), ("lb-1", "web-1", "http"), ("lb-1", "web-2", "http")]
    assert lab.probe_many(probes) == ["rejected", "allowed", "allowed"]
    second = manager.commit(moved)
    assert second == first + 1
    fleet.converge(moved, second)
    after = lab.probe_many(probes)
    assert after[0] == "allowed" and after[1] != "allowed" and after[2] == "allowed"

    # rollback to the first revision, as a new revision: the earlier verdicts come back
    third = manager._http("POST", f"/v1/rollback/{first}")["revision"]
    assert third == second + 1
    fleet.converge(docs, third)
    assert lab.probe_many(probes) == ["rejected", "allowed", "allowed"]
    # and forward again, so the rest of the test runs on the moved documents
    fourth = manager.commit(moved)
    fleet.converge(moved, fourth)
    assert lab.probe_many(probes) == after

    # the manager dies: enforcement stays, the agents keep running
    assert manager.proc is not None
    manager.proc.send_signal(signal.SIGKILL)
    manager.proc.wait()
    manager.proc = None
    assert lab.probe_many(probes) == after
    for agent in fleet.agents.values():
        status = agent.status()  # asserts the process is alive
        assert status is not None and status.converged
