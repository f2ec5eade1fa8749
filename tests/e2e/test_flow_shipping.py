"""End to end, the flow records' way to the manager and the metrics, on real processes.

A lab of two hosts and four VMs (tenants `t` and `u`, one VM of each per host; agents
disabled), `hyperwall manager` in hv1's namespace, one `hyperwall agent --server` per host
with `--flow-log`, `--metrics-listen` (on the host's loopback) and hit counters read every
second. The hosts' UDP conntrack timeout is 1 s, so a UDP probe's connection ends (and its
connection record is written at both ends) a second after its answer; a conntrack dump
evicts what expired without waiting for the garbage collector.

- Shipping: records of probes made while the manager is stopped stay in the agents' flow
  logs (the agents' metrics count failed batches) and are all in the manager's store,
  exactly once, after it is started again on the same store.
- RBAC on `/v1/flows` and through `hyperwall logs`: tenant t's token sees only t's
  workloads' records, u's only u's, the auditor all of them.
- Metrics: the agent's drops move for a default drop (a blocked probe) and an
  anti-spoofing drop (a probe from an address the VM does not own), its flow counters for
  what was written and shipped; the manager's realization lag for a revision applied while
  it runs.

Every wait polls for an event with a deadline that only turns a hang into a failure; every
process is stopped and the lab removed afterwards, also on failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hyperwall.dataplane.conntrack.kernel import Conntrack
from hyperwall.dataplane.netns import inside
from hyperwall.flows.tail import decode_lines, log_files
from hyperwall.lab import Lab
from tests.agent.test_manager_source import hyperwall, wait_for
from tests.e2e.test_manager_lab import Fleet
from tests.lab.conftest import lab_marks
from tests.manager.test_metrics import parse_metrics

pytestmark = lab_marks()

METRICS_PORT = 9471
SPOOFED = "10.76.9.9"

FLEET = """
apiVersion: hyperwall.io/v1
kind: Tenant
metadata: {name: t}
spec: {defaultAction: drop}
---
apiVersion: hyperwall.io/v1
kind: Tenant
metadata: {name: u}
spec: {defaultAction: drop}
"""
for _tenant, _n in (("t", 1), ("u", 3)):
    for _name, _host, _k in (("a", "hv1", _n), ("b", "hv2", _n + 1)):
        FLEET += f"""---
apiVersion: hyperwall.io/v1
kind: Workload
metadata: {{name: {_tenant}{_name}, tenant: {_tenant}, labels: {{role: {_name}}}}}
spec:
  host: {_host}
  interfaces: [{{name: eth0, mac: "52:54:00:d6:00:0{_k}", ips: [10.76.0.{_k}]}}]
"""
    FLEET += f"""---
apiVersion: hyperwall.io/v1
kind: Policy
metadata: {{name: p, tenant: {_tenant}}}
spec:
  tier: application
  rules:
    - name: dns
      action: allow
      direction: both
      from: [{{workload: {_tenant}a}}]
      to: [{{workload: {_tenant}b}}]
      services: [udp/53]
"""


class Setup(Fleet):
    """The manager in hv1's namespace, one agent per host with a flow log and metrics."""

    def __init__(self, lab: Lab, tmp: Path, docs: list[dict[str, Any]]) -> None:
        super().__init__(lab, tmp)
        self.docs = docs
        self.tokens: dict[str, str] = {}
        self.extra = lambda host: [
            "--flow-log",
            str(self.flow_log(host)),
            "--metrics-listen",
            f"127.0.0.1:{METRICS_PORT}",
            "--hits-seconds",
            "1",
        ]

    def start(self) -> None:
        super().start()
        self.converge(self.docs, self.manager.commit(self.docs))
        for name, body in (
            ("t", {"role": "tenant-admin", "tenant": "t"}),
            ("u", {"role": "tenant-admin", "tenant": "u"}),
            ("auditor", {"role": "auditor"}),
        ):
            self.tokens[name] = self.manager._http("POST", "/v1/tokens", body)["token"]

    def flow_log(self, host: str) -> Path:
        return self.tmp / host / "flows.jsonl"

    def local_records(self) -> list[dict[str, Any]]:
        """Every connection record in the agents' flow log files."""
        out: list[dict[str, Any]] = []
        for host in self.hosts:
            for path in log_files(self.flow_log(host)):
                records, _ = decode_lines(path.read_bytes())
                out += [r for r in records if r.get("kind") == "connection"]
        return out

    def stored(self, token: str | None = None) -> list[dict[str, Any]]:
        answer = self.manager._http("GET", "/v1/flows?limit=10000", token=token)
        return [r for r in answer["records"] if r.get("kind") == "connection"]

    def scrape(self, host: str) -> dict[str, float]:
        with (
            inside(self.hosts[host]),
            urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10) as resp,
        ):
            return parse_metrics(resp.read().decode())

    def scrape_manager(self) -> dict[str, float]:
        with (
            inside(self.hosts["hv1"]),
            urllib.request.urlopen(f"{self.manager.url}/metrics", timeout=10) as resp,
        ):
            return parse_metrics(resp.read().decode())


def key(record: dict[str, Any]) -> tuple[Any, ...]:
    return (record["host"], record["workload"], record["start"], record.get("sport"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    folder = tmp_path_factory.mktemp("hwd-flows")
    (folder / "fleet.yaml").write_text(FLEET)
    docs = [d for d in _documents(folder)]
    lab = Lab(f"hwd{os.getpid() % 100000}")
    lab.down()
    s: Setup | None = None
    try:
        lab.up([folder], agents_enabled=False)
        for host in lab.plan().hosts:
            subprocess.run(["ip", "-n", host.ns, "link", "set", "lo", "up"], check=True)
            for name in ("udp_timeout", "udp_timeout_stream"):
                sysctl = f"net.netfilter.nf_conntrack_{name}=1"
                subprocess.run(
                    ["ip", "netns", "exec", host.ns, "sysctl", "-qw", sysctl], check=True
                )
        s = Setup(lab, tmp_path_factory.mktemp("hwd-run"), docs)
        s.start()
        yield s
    finally:
        if s is not None:
            s.stop()
        lab.down()


def _documents(folder: Path) -> list[dict[str, Any]]:
    from hyperwall.io.files import read_documents

    docs, issues = read_documents([folder])
    assert not issues
    return [json.loads(json.dumps(d)) for d, _ in docs]


def until(s: Setup, check: Callable[[], Any], what: str) -> Any:
    """Poll `check`, evicting expired conntrack entries in the hosts first (their DESTROY
    events make the connection records)."""

    def step() -> Any:
        for ns in s.hosts.values():
            with Conntrack(ns) as ct:
                ct.count()
        return check()

    return wait_for(step, what, deadline=90)


def probe_both(s: Setup) -> None:
    for tenant in ("t", "u"):
        assert s.lab.probe(f"{tenant}a", f"{tenant}b", "udp/53") == "allowed"


def test_records_made_while_the_manager_is_away_arrive_once(setup: Setup) -> None:
    s = setup
    probe_both(s)
    until(s, lambda: len(s.stored()) >= 4, "the first records stored")
    s.manager.stop()
    local_before = len(s.local_records())
    probe_both(s)
    probe_both(s)
    until(s, lambda: len(s.local_records()) >= local_before + 8, "records logged locally")
    wait_for(
        lambda: s.scrape("hv1").get("hyperwall_agent_flow_ship_failures_total", 0) > 0,
        "hv1's shipper to fail while the manager is away",
    )
    s.manager.start()
    local = s.local_records()

    def all_stored() -> bool:
        return sorted(map(key, s.stored())) == sorted(map(key, local))

    wait_for(all_stored, "every local record in the manager's store", deadline=90)
    stored = s.stored()
    assert len({key(r) for r in stored}) == len(stored)  # none twice
    assert {r["host"] for r in stored} == {"hv1", "hv2"}


def test_a_tenant_sees_only_its_own_records(setup: Setup) -> None:
    s = setup
    if not s.stored():
        probe_both(s)
        until(s, lambda: len(s.stored()) >= 4, "records stored")
    for tenant in ("t", "u"):
        seen = s.stored(s.tokens[tenant])
        assert seen and {r["workload"].split("/")[0] for r in seen} == {tenant}
    everything = s.stored(s.tokens["auditor"])
    assert {r["workload"].split("/")[0] for r in everything} == {"t", "u"}
    # the same through the command, as a process in hv1's namespace
    env = {**os.environ, "HYPERWALL_SERVER": s.manager.url, "HYPERWALL_TOKEN": s.tokens["u"]}
    done = subprocess.run(
        ["ip", "netns", "exec", s.hosts["hv1"], *hyperwall(), "logs", "--json", "--limit", "10000"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    workloads = {json.loads(line)["workload"] for line in done.stdout.splitlines()}
    assert workloads and all(w.startswith("u/") for w in workloads)


def test_metrics_move_with_traffic(setup: Setup) -> None:
    s = setup
    before = s.scrape("hv1")
    assert before["hyperwall_agent_conntrack_max"] > 0
    assert before['hyperwall_agent_sync_duration_seconds_count{trigger="policy"}'] >= 1
    assert s.lab.probe("ta", "tb", "udp/54") == "blocked"  # t's default, at ta's end (hv1)
    s.lab.exec("ta", ["ip", "address", "add", f"{SPOOFED}/32", "dev", "eth0"], check=True)
    try:
        s.lab.probe("ta", "tb", "udp/53", source=SPOOFED)
    finally:
        s.lab.exec("ta", ["ip", "address", "del", f"{SPOOFED}/32", "dev", "eth0"])

    def moved() -> dict[str, float] | None:
        now = s.scrape("hv1")
        ok = all(
            now[f'hyperwall_agent_drops_total{{reason="{r}"}}']
            > before[f'hyperwall_agent_drops_total{{reason="{r}"}}']
            for r in ("default", "spoofed")
        )
        return now if ok else None

    after = wait_for(moved, "hv1's drops by default and spoofed to move", deadline=60)
    assert after["hyperwall_agent_flow_records_written_total"] > 0
    assert after["hyperwall_agent_flow_records_shipped_total"] > 0
    assert after['hyperwall_agent_drops_total{reason="misdirected"}'] == 0
    manager = wait_for(
        lambda: (m := s.scrape_manager())['hyperwall_manager_hosts{state="in-sync"}'] == 2 and m,
        "both hosts in sync in the manager's metrics",
    )
    assert manager["hyperwall_manager_flow_records_stored_total"] > 0
    # a revision applied while this manager runs: its realization is timed at both hosts
    lag = manager.get("hyperwall_manager_realization_lag_seconds_count", 0)
    docs = json.loads(json.dumps(s.docs))
    workload = next(d for d in docs if d["kind"] == "Workload")
    workload["metadata"]["labels"]["touched"] = str(time.time_ns())
    s.manager.commit(docs)
    wait_for(
        lambda: s.scrape_manager()["hyperwall_manager_realization_lag_seconds_count"] >= lag + 2,
        "the manager to time the realization at both hosts",
    )
