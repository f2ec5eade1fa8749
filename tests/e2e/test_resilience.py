"""End to end, the control plane's failures: the manager restarting, its store going away.

Real processes on a real lab (`hyperwall.lab.Lab`, agents disabled): `hyperwall manager` in
host hv1's namespace, one `hyperwall agent --server` per host namespace (the `Fleet` of
`test_manager_lab.py`), the client commands run as `hyperwall ...` processes in hv1's
namespace, real probes between VMs.

- Manager restart (SQLite): revisions applied by different authors, including a rollback;
  the manager is SIGKILLed right after the last commit returns and started again on the
  same store. Every revision is still there with the same number, author, time, message
  and changes; the current documents are the last committed ones; the next apply continues
  the numbering; the agents (running throughout) follow it, report in sync, and the probes
  follow the policy.
- Store outage (etcd, run in hv1's namespace): etcd is SIGKILLed under a running manager.
  Applying fails at once, saying the manager cannot reach its store, with exit 4 (the
  client contract; the manager answers 503); the manager and the agents keep running and
  enforcement is unchanged. etcd comes back on the same data directory: the same manager
  process recovers by itself, and a label change applied then is realized by every agent
  and followed by the probes.

Every wait is for an event, with a deadline that only turns a hang into a failure. Every
process is stopped and the lab removed afterwards, also on failure.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from hyperwall.lab import Lab
from hyperwall.store import DocKey
from tests.agent.test_manager_source import example_documents, hyperwall, relabel, wait_for
from tests.e2e.test_manager_lab import EXAMPLES, Fleet, hashes, probe_rows
from tests.lab.conftest import lab_marks
from tests.store.etcd_server import EtcdProcess

pytestmark = lab_marks()

# web-1 moves from the web tier to the app tier: it may then reach the database, and the
# load balancer no longer reaches it (web-2 stays reachable)
MOVED_PROBES = [("web-1", "db-1", "postgres"), ("lb-1", "web-1", "http"), ("lb-1", "web-2", "http")]


def moved_ok(results: Sequence[str]) -> bool:
    return results[0] == "allowed" and results[1] != "allowed" and results[2] == "allowed"


def lab_name(tag: str) -> str:
    return f"hwc{tag}{os.getpid() % 100_000}"  # namespaces hwl-hwc...; ours alone


@pytest.fixture
def lab() -> Iterator[Lab]:
    lab = Lab(lab_name("r"))
    lab.down()
    try:
        lab.up([EXAMPLES], agents_enabled=False)
        for host in lab.plan().hosts:  # the manager (and etcd) listen on hv1's loopback
            subprocess.run(["ip", "-n", host.ns, "link", "set", "lo", "up"], check=True)
        yield lab
    finally:
        lab.down()


class Cli:
    """`hyperwall` client commands, run as processes in hv1's namespace."""

    def __init__(self, fleet: Fleet, tmp: Path) -> None:
        self.fleet = fleet
        self.tmp = tmp
        tmp.mkdir(exist_ok=True)

    def token_file(self, name: str, secret: str) -> Path:
        path = self.tmp / f"{name}.token"
        path.write_text(secret + "\n")
        return path

    def run(self, *args: str, token_file: Path | None = None) -> subprocess.CompletedProcess[str]:
        manager = self.fleet.manager
        token_file = token_file or manager.tmp / "admin-token"
        ns = self.fleet.hosts[self.fleet.first]
        argv = [*hyperwall(), *args, "--server", manager.url, "--token-file", str(token_file)]
        return subprocess.run(
            ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=120
        )

    def json(self, *args: str, token_file: Path | None = None) -> Any:
        done = self.run(*args, "--json", token_file=token_file)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return json.loads(done.stdout)

    def write(self, name: str, docs: list[dict[str, Any]]) -> Path:
        """`docs` as one YAML file (JSON is YAML) for `apply -f`."""
        path = self.tmp / f"{name}.yaml"
        path.write_text("".join(f"---\n{json.dumps(d)}\n" for d in docs))
        return path


def by_key(docs: list[dict[str, Any]]) -> dict[DocKey, dict[str, Any]]:
    return {DocKey.of(d): d for d in docs}


def stored(fleet: Fleet) -> dict[DocKey, dict[str, Any]]:
    return by_key(fleet.manager._http("GET", "/v1/documents")["documents"])


def revisions(fleet: Fleet, numbers: range) -> dict[int, Any]:
    return {n: fleet.manager._http("GET", f"/v1/revisions/{n}") for n in numbers}


def agents_alive(fleet: Fleet, docs: list[dict[str, Any]]) -> None:
    """Every agent process runs and still enforces the program of `docs`."""
    for host, digest in hashes(docs, list(fleet.hosts)).items():
        status = fleet.agents[host].status()  # asserts the process is alive
        assert status is not None and status.program_hash == digest and status.converged


# -- the manager restarts --------------------------------------------------------------------


@pytest.fixture
def sqlite_fleet(lab: Lab, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(lab, tmp_path)
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()


def test_manager_restart_loses_no_committed_revision(sqlite_fleet: Fleet, tmp_path: Path) -> None:
    fleet, lab, manager = sqlite_fleet, sqlite_fleet.lab, sqlite_fleet.manager
    cli = Cli(fleet, tmp_path / "cli")
    docs = example_documents()
    moved = relabel(docs, "web-1", "app")
    rows = probe_rows()

    applied = cli.json("apply", "-f", str(cli.write("original", docs)), "-m", "the shop")
    assert applied["revision"] == 1 and applied["created"]
    fleet.converge(docs, 1)
    assert lab.probe_many([r[:3] for r in rows]) == [r[3] for r in rows]
    body = {"documents": moved, "message": "web-1 joins the app tier"}
    assert manager._http("POST", "/v1/apply", body)["revision"] == 2
    assert cli.json("rollback", "1", "-m", "back to the shop")["revision"] == 3
    before = revisions(fleet, range(1, 4))

    # the last revision by another author: acme's tenant-admin moves web-1 again
    tenant = manager._http("POST", "/v1/tokens", {"role": "tenant-admin", "tenant": "acme"})
    web1 = [d for d in moved if d["kind"] == "Workload" and d["metadata"]["name"] == "web-1"]
    last = cli.json(
        "apply",
        "-f",
        str(cli.write("web-1", web1)),
        "-m",
        "web-1 to app, by acme",
        token_file=cli.token_file("acme", tenant["token"]),
    )
    assert manager.proc is not None
    manager.proc.send_signal(signal.SIGKILL)  # right after the commit returned
    manager.proc.wait()
    manager.proc = None
    assert last["revision"] == 4 and last["created"]

    manager.start()  # same store, same port
    history = cli.json("history")
    assert [e["revision"] for e in history] == [4, 3, 2, 1]
    after = revisions(fleet, range(1, 5))
    assert {n: after[n] for n in range(1, 4)} == before
    fourth = after[4]
    assert fourth["author"] == f"tenant-admin@acme:{tenant['id']}"
    assert fourth["message"] == "web-1 to app, by acme"
    (change,) = fourth["changes"]
    assert (change["kind"], change["tenant"], change["name"]) == ("Workload", "acme", "web-1")
    assert change["before"]["metadata"]["labels"]["role"] == "web"
    assert change["after"] == web1[0]
    for entry in history:  # the CLI's view: number, author, time, message
        assert entry == {k: after[entry["revision"]][k] for k in entry}
    assert stored(fleet) == by_key(moved)
    assert cli.json("get", "workload", "web-1", "--tenant", "acme") == web1[0]

    # the agents (never restarted) reconnect and realize revision 4
    fleet.converge(moved, 4)
    assert moved_ok(lab.probe_many(MOVED_PROBES))

    # numbering goes on; the agents follow the next revision too
    applied = cli.json("apply", "-f", str(cli.write("original", docs)), "-m", "the shop again")
    assert applied["revision"] == 5 and applied["created"]
    fleet.converge(docs, 5)
    assert lab.probe_many([r[:3] for r in rows]) == [r[3] for r in rows]
    status = cli.run("status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert {h["state"] for h in json.loads(status.stdout)["hosts"]} == {"in-sync"}


# -- the store goes away ---------------------------------------------------------------------


@pytest.fixture
def etcd_fleet(lab: Lab, tmp_path: Path) -> Iterator[tuple[Fleet, EtcdProcess]]:
    fleet = Fleet(lab, tmp_path)
    (tmp_path / "etcd").mkdir()
    etcd: EtcdProcess | None = None
    try:
        etcd = EtcdProcess.start(tmp_path / "etcd", netns=fleet.hosts[fleet.first])
        fleet.manager.store_url = f"etcd://127.0.0.1:{etcd.port}/hwc-e2e/"
        fleet.start()
        yield fleet, etcd
    finally:
        fleet.stop()
        if etcd is not None:
            etcd.stop()


def refused_by_the_manager(fleet: Fleet, host: str) -> bool:
    """The manager's log shows a 503 answer to `host`'s agent."""
    log = (fleet.manager.tmp / "manager.log").read_text()
    return re.search(rf'"GET /v1/agent/{host}/\S+ HTTP/1.1" 503', log) is not None


def test_etcd_outage_keeps_enforcement_and_converges_after(
    etcd_fleet: tuple[Fleet, EtcdProcess], tmp_path: Path
) -> None:
    (fleet, etcd), lab, manager = etcd_fleet, etcd_fleet[0].lab, etcd_fleet[0].manager
    cli = Cli(fleet, tmp_path / "cli")
    docs = example_documents()
    moved = relabel(docs, "web-1", "app")

    applied = cli.json("apply", "-f", str(cli.write("original", docs)), "-m", "the shop")
    assert applied["revision"] == 1
    fleet.converge(docs, 1)
    enforced = lab.probe_many(MOVED_PROBES)
    assert enforced == ["rejected", "allowed", "allowed"]

    etcd.kill()
    # apply fails at once, with the contract's exit code for "unreachable" (4) and a reason
    failed = cli.run("apply", "-f", str(cli.write("moved", moved)), "-m", "during the outage")
    assert failed.returncode == 4, failed.stdout + failed.stderr
    assert "cannot reach its store" in failed.stderr and "etcd" in failed.stderr
    failed = cli.run("history", "--json")
    assert failed.returncode == 4 and "its store" in json.loads(failed.stdout)["error"]
    # every agent asks the manager during the outage, is refused, and keeps enforcing
    for host in fleet.hosts:

        def refused(host: str = host) -> bool:
            return refused_by_the_manager(fleet, host)

        wait_for(refused, f"{host}'s agent refused by the manager")
    assert lab.probe_many(MOVED_PROBES) == enforced
    agents_alive(fleet, docs)
    assert manager.proc is not None and manager.proc.poll() is None
    pid = manager.proc.pid

    etcd.restart()  # same ports, same data directory

    def recovered() -> bool:
        return cli.run("history", "--json").returncode == 0

    wait_for(recovered, "the manager to reach etcd again")
    assert manager.proc.pid == pid and manager.proc.poll() is None  # never restarted
    assert [e["revision"] for e in cli.json("history")] == [1]
    applied = cli.json("apply", "-f", str(cli.write("moved", moved)), "-m", "after the outage")
    assert applied["revision"] == 2 and applied["created"]
    fleet.converge(moved, 2)
    assert moved_ok(lab.probe_many(MOVED_PROBES))
    status = cli.run("status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
