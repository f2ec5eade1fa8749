"""Hit counters and connection records against real packets, in one lab of two hosts.

Hit counters: the policy folds `http`, `ssh` and `dns` (three allow rules from a to b)
into one set lookup, keeps `pg-deny` as a rule of its own, folds `to-c` with `unused`, and
leaves tenant `t`'s default (drop) for the rest. Real probes then go a -> b http, a -> c
http, a -> c postgres (dropped) and b -> a (the default). What each agent writes to
`hits.json`, and `lab stats` sums over both hosts, must move exactly for the rules that
decided: the folded `ssh` next to the hit `http` stays at 0 (its element's own counter),
and so does the unprobed `unused`.

Connection records: a UDP probe a -> b (one datagram each way: 39 bytes of IPv4) leaves one
record in each host's flow log, hv1's for a's egress and hv2's for b's ingress, naming
`t/p/dns`, with its start and end and the counters both ways; a connection of the host
itself (on its loopback) leaves none. The hosts' UDP timeout is 1 s, and a conntrack dump
(which evicts expired entries) ends the connection in the kernel without waiting for its
garbage collection.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from hyperwall.agent.hits import read_report
from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.program import LookupRule
from hyperwall.dataplane.conntrack.kernel import Conntrack
from hyperwall.flows.record import FlowRecord, decode_lines
from hyperwall.lab import Lab
from hyperwall.lab.agents import flow_log

from .conftest import lab_marks, run_cli

pytestmark = lab_marks()

FLEET = """
apiVersion: hyperwall.io/v1
kind: Tenant
metadata: {name: t}
spec: {defaultAction: drop}
---
apiVersion: hyperwall.io/v1
kind: Workload
metadata: {name: a, tenant: t, labels: {role: a}}
spec:
  host: hv1
  interfaces: [{name: eth0, mac: "52:54:00:e5:00:01", ips: [10.75.0.1]}]
---
apiVersion: hyperwall.io/v1
kind: Workload
metadata: {name: b, tenant: t, labels: {role: b}}
spec:
  host: hv2
  interfaces: [{name: eth0, mac: "52:54:00:e5:00:02", ips: [10.75.0.2]}]
---
apiVersion: hyperwall.io/v1
kind: Workload
metadata: {name: c, tenant: t, labels: {role: c}}
spec:
  host: hv2
  interfaces: [{name: eth0, mac: "52:54:00:e5:00:03", ips: [10.75.0.3]}]
---
apiVersion: hyperwall.io/v1
kind: Policy
metadata: {name: p, tenant: t}
spec:
  tier: application
  rules:
    - name: http
      action: allow
      direction: both
      from: [{workload: a}]
      to: [{workload: b}]
      services: [tcp/80]
    - name: ssh
      action: allow
      direction: both
      from: [{workload: a}]
      to: [{workload: b}]
      services: [tcp/22]
    - name: dns
      action: allow
      direction: both
      from: [{workload: a}]
      to: [{workload: b}]
      services: [udp/53]
    - name: pg-deny
      action: drop
      direction: both
      from: [{workload: a}]
      to: [{workload: c}]
      services: [tcp/5432]
    - name: to-c
      action: allow
      direction: both
      from: [{workload: a}]
      to: [{workload: c}]
      services: [tcp/80]
    - name: unused
      action: allow
      direction: both
      from: [{workload: c}]
      to: [{workload: b}]
      services: [tcp/9]
"""
PROBES = [
    ("a", "b", "tcp/80", "allowed"),
    ("a", "c", "tcp/80", "allowed"),
    ("a", "c", "tcp/5432", "blocked"),
    ("b", "a", "tcp/80", "blocked"),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    folder = tmp_path_factory.mktemp("hits")
    (folder / "fleet.yaml").write_text(FLEET)
    lab = Lab(f"hwe{os.getpid() % 100000}h")
    lab.down()
    try:
        lab.up([folder])
        for host in lab.plan().hosts:  # connections end 1 s after their last packet
            for name in ("udp_timeout", "udp_timeout_stream"):
                sysctl = f"net.netfilter.nf_conntrack_{name}=1"
                subprocess.run(
                    ["ip", "netns", "exec", host.ns, "sysctl", "-qw", sysctl], check=True
                )
        yield lab
    finally:
        lab.down()


def _hits(lab: Lab) -> dict[str, dict[str, dict[str, Any]]]:
    """host -> rule key -> its totals, as the agents last wrote them."""
    return {h: read_report(lab.paths.agent_dir(h) / "hits.json")[1] for h in lab.state().agents}


def _settled(lab: Lab, since: float, deadline: float = 60.0) -> dict[str, dict[str, Any]]:
    """The agents' readings once both have read after `since` and two readings in a row
    agree (the probes' counters are all in)."""
    end = time.monotonic() + deadline
    last = None
    while time.monotonic() < end:
        reads = [read_report(lab.paths.agent_dir(h) / "hits.json")[0] for h in ("hv1", "hv2")]
        if all(r is not None and r > since for r in reads):
            current = _hits(lab)
            if current == last:
                return current
            last = current
        time.sleep(1.0)
    raise AssertionError(f"the agents' hit counters did not settle: {last}")


def test_counters_move_for_the_deciding_rule_only(lab: Lab) -> None:
    catalog = lab.catalog()
    program = FleetCompiler(catalog.config, catalog.workloads.values()).host_program("hv1")
    folded = [i for c in program.chains.values() for i in c.items if isinstance(i, LookupRule)]
    assert any({"t/p/http", "t/p/ssh"} <= set(i.rules) for i in folded)  # one lookup
    start = time.time()
    assert lab.probe_many([p[:3] for p in PROBES]) == [p[3] for p in PROBES]
    hits = _settled(lab, start)
    # a -> b http: counted at a's egress on hv1 and b's ingress on hv2, one new connection
    assert {h: hits[h]["t/p/http"]["packets"] for h in hits} == {"hv1": 1, "hv2": 1}
    assert {h: hits[h]["t/p/to-c"]["packets"] for h in hits} == {"hv1": 1, "hv2": 1}
    # dropped at a's egress: never reached hv2 (the SYN may be sent again)
    assert hits["hv1"]["t/p/pg-deny"]["packets"] >= 1
    assert "t/p/pg-deny" not in hits["hv2"]
    # b -> a: no rule, so tenant t's default at b's egress (hv2)
    assert hits["hv2"]["default@t"]["packets"] >= 1
    assert "default@t" not in hits["hv1"]
    for host in hits:
        assert "t/p/ssh" not in hits[host]  # folded beside http (and dns), never hit
        assert "t/p/unused" not in hits[host]
        for entry in hits[host].values():
            assert entry["bytes"] > 0 and entry["lastHit"] >= start - 1

    # lab stats sums the two hosts per rule and lists what was not hit
    shown = run_cli("lab", "stats", "--name", lab.name, "--json")
    assert shown.returncode == 0, shown.stderr
    rows = {r["rule"]: r for r in json.loads(shown.stdout)["rules"]}
    assert (rows["t/p/http"]["packets"], rows["t/p/http"]["hosts"]) == (2, 2)
    assert rows["t/p/http"]["bytes"] == sum(hits[h]["t/p/http"]["bytes"] for h in hits)
    assert rows["t/p/ssh"]["packets"] == 0 and rows["t/p/ssh"]["lastHit"] is None
    unused = run_cli("lab", "stats", "--name", lab.name, "--json", "--unused", "1")
    names = {r["rule"] for r in json.loads(unused.stdout)["rules"]}
    assert {"t/p/ssh", "t/p/unused"} <= names and "t/p/http" not in names


def test_counters_survive_an_agent_restart(lab: Lab) -> None:
    before = _settled(lab, time.time())
    lab.kill_agent("hv1")
    lab.start_agent("hv1")
    lab.wait()
    start = time.time()
    assert lab.probe("a", "b", "tcp/80") == "allowed"
    after = _settled(lab, start)
    # the restarted agent adds the new connection to its saved total, nothing twice
    assert after["hv1"]["t/p/http"]["packets"] == before["hv1"]["t/p/http"]["packets"] + 1
    assert after["hv2"]["t/p/http"]["packets"] == before["hv2"]["t/p/http"]["packets"] + 1


def _connections(lab: Lab, host: str) -> list[FlowRecord]:
    path = flow_log(lab.paths, host)
    if not path.exists():
        return []
    records = (r for _, r in decode_lines(path.read_bytes().splitlines()))
    return [r for r in records if r.kind == "connection"]


def test_a_connection_leaves_one_record_per_end(lab: Lab) -> None:
    hosts = {h.name: h.ns for h in lab.plan().hosts}
    before = {h: len(_connections(lab, h)) for h in hosts}
    # a connection of hv1 itself, on its loopback: no VM's, so no record
    local = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        "s.bind(('127.0.0.1', 5353)); c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        "c.sendto(b'x', ('127.0.0.1', 5353)); s.recvfrom(10)"
    )
    subprocess.run(["ip", "netns", "exec", hosts["hv1"], "python3", "-c", local], check=True)
    start = time.time()
    assert lab.probe("a", "b", "udp/53") == "allowed"
    sent = time.time()
    found: dict[str, list[FlowRecord]] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for ns in hosts.values():  # evict what expired, as the garbage collector would
            with Conntrack(ns) as ct:
                ct.count()
        found = {h: _connections(lab, h)[before[h] :] for h in hosts}
        if all(found.values()):
            break
        time.sleep(1.0)
    ends = {"hv1": ("t/a", "out"), "hv2": ("t/b", "in")}
    for host, records in found.items():
        assert len(records) == 1, (host, records)
        r = records[0]
        assert (r.workload, r.direction) == ends[host]
        assert (r.rule, r.action, r.proto, r.dport) == ("t/p/dns", "allow", "udp", 53)
        assert (r.src, r.dst, r.host) == ("10.75.0.1", "10.75.0.2", host)
        assert (r.src_packets, r.src_bytes, r.dst_packets, r.dst_bytes) == (1, 39, 1, 39)
        assert r.start is not None and r.end is not None
        assert start - 1 <= r.start / 1e6 <= sent + 1
        assert r.start <= r.end <= r.time
