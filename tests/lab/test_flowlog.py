"""The flow log against real packets, in one lab of two hosts (`hwc<pid>f`).

Tenant `t` (default drop, logDefault) has `a` on hv1 and `b` on hv2; `a` may send anything
(`a-out`, not logged). At `b`'s ingress: `deny-pg` drops tcp/5432 (logged), `ping` allows
ICMP/ICMPv6 echo (logged), `rej` rejects tcp/5003 (logged), `quiet` drops tcp/5004 (not
logged), `flood` drops udp/5005 (logged). `b` -> `a` meets `b`'s default at its egress on
hv2 (logged).
A tenant, policy and rule of 63 characters each on `w` (hv1) make a rule id of 191
characters, longer than the kernel's 127-byte log prefix. A packet `a` sends from an
address not its own is an anti-spoofing drop at hv1.

Each logged decision must leave exactly the record POLICY.md describes in the enforcing
host's flow log (`lab logs` reads them), the unlogged one none. A flood of logged drops
keeps the agent's memory flat (RSS growth bounded across a second, larger flood) and the
records the kernel's rate limit suppressed are counted: logged + suppressed = every packet
that reached the log rule, by the kernel's own two counters.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hyperwall.agent.flowlog import read_flowlog_status
from hyperwall.dataplane.nft.log_counters import read_log_counters
from hyperwall.dataplane.nft.policy_chains import log_chain
from hyperwall.flows.filter import FlowFilter
from hyperwall.flows.local import read_local
from hyperwall.lab import Lab
from hyperwall.lab.agents import flow_log

from .conftest import lab_marks, lab_namespaces, run_cli

pytestmark = lab_marks()

LT = "long-tenant-" + "x" * 51
LP = "long-policy-" + "y" * 51
LR = "long-rule-" + "z" * 53
LONG_RULE = f"{LT}/{LP}/{LR}"
FLEET = f"""
apiVersion: hyperwall.io/v1
kind: Tenant
metadata: {{name: t}}
spec: {{defaultAction: drop, logDefault: true}}
---
apiVersion: hyperwall.io/v1
kind: Tenant
metadata: {{name: {LT}}}
spec: {{defaultAction: allow}}
---
apiVersion: hyperwall.io/v1
kind: Workload
metadata: {{name: a, tenant: t}}
spec:
  host: hv1
  interfaces: [{{name: eth0, mac: "52:54:00:c0:00:01", ips: [10.76.0.1, "fd00:76::1"]}}]
---
apiVersion: hyperwall.io/v1
kind: Workload
metadata: {{name: b, tenant: t}}
spec:
  host: hv2
  interfaces: [{{name: eth0, mac: "52:54:00:c0:00:02", ips: [10.76.0.2, "fd00:76::2"]}}]
---
apiVersion: hyperwall.io/v1
kind: Workload
metadata: {{name: w, tenant: {LT}}}
spec:
  host: hv1
  interfaces: [{{name: eth0, mac: "52:54:00:c0:00:03", ips: [10.76.0.3]}}]
---
apiVersion: hyperwall.io/v1
kind: Policy
metadata: {{name: p, tenant: t}}
spec:
  rules:
    - {{name: a-out, action: allow, direction: out, from: [{{workload: a}}]}}
    - name: deny-pg
      action: drop
      direction: in
      to: [{{workload: b}}]
      services: [tcp/5432]
      log: true
    - name: ping
      action: allow
      direction: in
      to: [{{workload: b}}]
      services: [icmp/echo-request, icmpv6/echo-request]
      log: true
    - {{name: rej, action: reject, direction: in, to: [{{workload: b}}], services: [tcp/5003],
       log: true}}
    - {{name: quiet, action: drop, direction: in, to: [{{workload: b}}], services: [tcp/5004]}}
    - {{name: flood, action: drop, direction: in, to: [{{workload: b}}], services: [udp/5005],
       log: true}}
---
apiVersion: hyperwall.io/v1
kind: Policy
metadata: {{name: {LP}, tenant: {LT}}}
spec:
  rules:
    - {{name: {LR}, action: drop, direction: in, services: [tcp/5007], log: true}}
"""
SPOOFED = "10.76.0.99"
FLOOD = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[1])):
    try:
        s.sendto(b"x", ("10.76.0.2", 5005))
    except OSError:
        pass
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    folder = tmp_path_factory.mktemp("flowlog")
    (folder / "fleet.yaml").write_text(FLEET)
    lab = Lab(f"hwc{os.getpid() % 100000}f")
    lab.down()
    try:
        lab.up([folder])
        yield lab
    finally:
        lab.down()
        assert lab_namespaces(lab) == []


def _records(lab: Lab, flt: FlowFilter = FlowFilter()) -> list[dict[str, Any]]:
    paths = [flow_log(lab.paths, h) for h in sorted(lab.state().agents)]
    return read_local(paths, flt)[0]


def _wait_for(lab: Lab, want: Any, deadline: float = 60.0) -> list[dict[str, Any]]:
    """The records, once `want(records)` holds (polled; a generous deadline)."""
    end = time.monotonic() + deadline
    records = _records(lab)
    while not want(records):
        if time.monotonic() > end:
            raise AssertionError(f"records never came; got {json.dumps(records)[:3000]}")
        time.sleep(0.5)
        records = _records(lab)
    return records


def _decisions(records: list[dict[str, Any]], **fields: Any) -> list[dict[str, Any]]:
    return [r for r in records if "kind" not in r and all(r.get(k) == v for k, v in fields.items())]


def test_logged_decisions_leave_their_records(lab: Lab) -> None:
    start = time.time()
    probes = [
        ("a", "b", "tcp/5432"),
        ("fd00:76::1", "fd00:76::2", "tcp/5432"),
        ("a", "b", "icmp/echo-request"),
        ("fd00:76::1", "fd00:76::2", "icmpv6/echo-request"),
        ("a", "b", "tcp/5003"),
        ("a", "b", "tcp/5004"),
        ("b", "a", "tcp/5006"),
        ("a", "w", "tcp/5007"),
    ]
    assert lab.probe_many(probes) == [
        *("blocked", "blocked", "allowed", "allowed", "rejected", "blocked", "blocked"),
        "blocked",
    ]
    lab.exec("a", ["ip", "address", "add", f"{SPOOFED}/32", "dev", "eth0"], check=True)
    try:
        assert lab.probe("a", "b", "udp/5009", source=SPOOFED) == "blocked"
    finally:
        lab.exec("a", ["ip", "address", "del", f"{SPOOFED}/32", "dev", "eth0"])

    def complete(records: list[dict[str, Any]]) -> bool:
        rules = {r.get("rule") for r in _decisions(records)}
        return {
            "t/p/deny-pg",
            "t/p/ping",
            "t/p/rej",
            "default",
            LONG_RULE,
            "anti-spoofing",
        } <= rules and len(_decisions(records, rule="t/p/ping")) >= 2

    records = _wait_for(lab, complete)
    assert all(
        r["time"] >= time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start - 1)) for r in records
    )
    base = {"host": "hv2", "workload": "t/b", "direction": "in"}
    pg4 = _decisions(records, rule="t/p/deny-pg", dst="10.76.0.2")
    keys = ("host", "workload", "direction", "action", "src", "proto", "dport")
    assert pg4 and {k: pg4[0][k] for k in keys} == {
        **base, "action": "drop", "src": "10.76.0.1", "proto": "tcp", "dport": 5432,
    }  # fmt: skip
    assert isinstance(pg4[0]["sport"], int) and "icmpType" not in pg4[0]
    pg6 = _decisions(records, rule="t/p/deny-pg", dst="fd00:76::2")
    assert pg6 and (pg6[0]["src"], pg6[0]["proto"], pg6[0]["dport"]) == ("fd00:76::1", "tcp", 5432)
    pings = {r["proto"]: r for r in _decisions(records, rule="t/p/ping")}
    assert pings["icmp"]["action"] == "allow" and pings["icmp"]["workload"] == "t/b"
    assert (pings["icmp"]["icmpType"], pings["icmp"]["icmpCode"]) == (8, 0)
    assert (pings["icmpv6"]["icmpType"], pings["icmpv6"]["icmpCode"]) == (128, 0)
    assert "sport" not in pings["icmp"] and "dport" not in pings["icmpv6"]
    rej = _decisions(records, rule="t/p/rej")
    assert rej and (rej[0]["action"], rej[0]["dport"], rej[0]["workload"]) == (
        "reject",
        5003,
        "t/b",
    )
    default = _decisions(records, rule="default")
    assert default and {
        (r["host"], r["workload"], r["direction"], r["action"]) for r in default
    } == {("hv2", "t/b", "out", "drop")}  # b's own egress: `a-out` is a's only
    long = _decisions(records, rule=LONG_RULE)
    assert long and (long[0]["host"], long[0]["workload"], long[0]["dport"]) == (
        "hv1",
        f"{LT}/w",
        5007,
    )
    spoof = _decisions(records, rule="anti-spoofing")
    assert spoof and {(r["host"], r["workload"], r["direction"], r["src"]) for r in spoof} == {
        ("hv1", "t/a", "out", SPOOFED)
    }
    # the unlogged rule decided tcp/5004 (and no other rule or default did): no record
    assert [r for r in records if r.get("dport") == 5004] == []
    # `lab logs` prints the same records, filtered like `hyperwall logs`
    shown = run_cli("lab", "logs", "--name", lab.name, "--rule", "t/p/deny-pg", "--json")
    assert shown.returncode == 0, shown.stderr
    lines = [json.loads(line) for line in shown.stdout.splitlines()]
    assert lines == _decisions(_records(lab), rule="t/p/deny-pg")
    text = run_cli("lab", "logs", "--name", lab.name, "--workload", "w", "--since", "10m")
    assert text.returncode == 0 and LONG_RULE in text.stdout and "t/b" not in text.stdout


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _flood_counters(lab: Lab) -> tuple[int, int]:
    """(packets that reached the flood rule's log statement on hv2, packets it logged)."""
    chain = log_chain("t/p/flood", "drop", "in").name
    argv = ["nft", "-j", "list", "chain", "inet", "hyperwall", chain]
    done = subprocess.run(
        ["ip", "netns", "exec", lab.names.host_ns("hv2"), *argv],
        capture_output=True,
        text=True,
        check=True,
    )
    (total, logged), *_ = read_log_counters(chain, json.loads(done.stdout)).values()
    return total, logged


def _suppressed(records: list[dict[str, Any]]) -> int:
    return sum(
        r["suppressed"]
        for r in records
        if r.get("kind") == "suppressed" and r["rule"] == "t/p/flood"
    )


def test_a_flood_keeps_memory_flat_and_counts_what_was_suppressed(lab: Lab) -> None:
    pid = lab.agent_pid("hv2")
    assert pid is not None
    lab.exec("a", ["python3", "-c", FLOOD, "20000"], check=True)  # warm up every path
    _wait_for(lab, lambda rs: _suppressed(rs) > 0)
    before = _rss_kib(pid)
    lab.exec("a", ["python3", "-c", FLOOD, "100000"], check=True)
    total, logged = _flood_counters(lab)
    assert total >= 60_000  # most of the flood reached the rule

    def settled(records: list[dict[str, Any]]) -> bool:
        now_total, now_logged = _flood_counters(lab)
        flood = _decisions(records, rule="t/p/flood")
        return len(flood) >= now_logged and _suppressed(records) >= now_total - now_logged

    records = _wait_for(lab, settled)
    total, logged = _flood_counters(lab)
    flood = _decisions(records, rule="t/p/flood")
    assert len(flood) == logged  # every packet the kernel logged is one record
    assert _suppressed(records) == total - logged  # and every one it suppressed is counted
    assert logged < total / 2  # the rate limit did suppress most of the flood
    after = _rss_kib(pid)
    assert after - before < 8 * 1024, (before, after)  # flat: no growth with the flood
    status = read_flowlog_status(lab.paths.agent_dir("hv2") / "flowlog.json")
    assert status is not None and status["by_rule"]["t/p/flood"] == total - logged
    report = next(a for a in lab.status().agents if a.host == "hv2")  # lab status shows it
    assert report.flowlog is not None and report.flowlog["suppressed"] >= total - logged
