"""The examples as a real lab with agents: real traffic gives the verdicts of `trace`.

One lab for the module (built once, taken down in a finally). Probes run concurrently
through the responders, so a batch of blocked probes costs about one timeout.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hyperwall.analysis.trace import trace
from hyperwall.lab import Lab, responder_client
from hyperwall.lab.errors import LabInputError
from hyperwall.policy.model import Catalog

from .conftest import (
    EXAMPLES,
    VERDICT_TO_RESULT,
    assert_probes_match_trace,
    lab_marks,
    lab_name,
    lab_namespaces,
    probe_rows,
    run_cli,
)

pytestmark = lab_marks()

PARALLEL = 128  # probes in flight: bursts far above the log rate limit (200/s, burst 50)

QUARANTINE_PING = """
apiVersion: hyperwall.io/v1
kind: Policy
metadata:
  name: lab-test
spec:
  tier: emergency
  priority: 1
  appliedTo: {selector: 'hyperwall.io/name == "web-2"'}
  rules:
    - name: refuse
      action: reject
      direction: in
      services: [icmp/echo-request, icmpv6/echo-request, udp/5353]
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    lab = Lab(lab_name("e"))
    lab.down()  # left-overs of an earlier run with the same pid
    try:
        lab.up([EXAMPLES])
        yield lab
    finally:
        lab.down()
        assert lab_namespaces(lab) == []


def test_every_vm_answers(lab: Lab) -> None:
    state = lab.state()
    assert set(state.vms) == set(lab.catalog().workloads)
    for responder in [*state.vms.values(), state.external]:
        assert responder is not None
        assert responder_client.ping(lab.paths.sockets / responder.socket) == responder.pid
    # every VM sends and receives: a probe from each to the outside and back gets a verdict
    vms = sorted(lab.catalog().workloads)
    results = lab.probe_many([(vm, "192.0.2.77", "tcp/443") for vm in vms])
    results += lab.probe_many([("198.51.100.7", vm, "tcp/22") for vm in vms])
    assert set(results) <= {"allowed", "blocked", "rejected"}


def test_probes_tsv(lab: Lab) -> None:
    rows = probe_rows()
    results = lab.probe_many([row[:3] for row in rows])
    assert list(zip(rows, results, strict=True)) == [(row, row[3]) for row in rows]


def _matrix(catalog: Catalog) -> list[tuple[str, str, str]]:
    workloads = sorted(catalog.workloads.values(), key=lambda w: w.key)
    v6 = {w.key: next(ip for ip in w.ips() if ":" in ip) for w in workloads}
    probes = []
    for a, b in itertools.permutations(workloads, 2):
        probes += [(a.key, b.key, "tcp/5432"), (a.key, b.key, "icmp/echo-request")]
        probes.append((v6[a.key], v6[b.key], "tcp/22"))
    for w in workloads:
        probes += [
            ("198.51.100.7", w.key, "tcp/443"),
            (w.key, "192.0.2.10", "tcp/873"),
            ("10.1.0.42", w.key, "udp/53") if w.key != "acme/db-1" else ("web-1", "dns-1", "dns"),
        ]
    return probes


def test_real_traffic_matches_trace(lab: Lab) -> None:
    probes = _matrix(lab.catalog())
    assert_probes_match_trace(lab, probes, parallel=PARALLEL)


def test_anti_spoofing(lab: Lab) -> None:
    assert lab.probe("web-1", "app-1", "app-api") == "allowed"
    for foreign in ("10.1.0.99", "10.1.0.10"):  # nobody's address, then lb-1's
        lab.exec("web-1", ["ip", "address", "add", f"{foreign}/32", "dev", "eth0"], check=True)
        try:
            assert lab.probe("web-1", "app-1", "app-api", source=foreign) == "blocked"
        finally:
            argv = ["ip", "address", "del", f"{foreign}/32", "dev", "eth0"]
            lab.exec("web-1", argv, check=True)
    assert lab.probe("web-1", "app-1", "app-api") == "allowed"


def test_apply_changes_what_passes(lab: Lab, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(EXAMPLES, docs)
    (docs / "lab-test.yaml").write_text(QUARANTINE_PING)
    before = [("jump-1", "web-2", "ping"), ("fd00:1::5", "fd00:1::22", "icmpv6/echo-request")]
    before += [("198.51.100.7", "web-2", "udp/5353"), ("jump-1", "web-2", "ssh")]
    assert lab.probe_many(before) == ["allowed", "allowed", "blocked", "allowed"]
    try:
        lab.apply([docs], wait=True)
        after = lab.probe_many(before)
        assert after == ["rejected", "rejected", "rejected", "allowed"]
        catalog = lab.catalog()
        assert after == [VERDICT_TO_RESULT[trace(catalog, *p).verdict] for p in before]
    finally:
        lab.apply([EXAMPLES], wait=True)
    assert lab.probe_many(before) == ["allowed", "allowed", "blocked", "allowed"]


def test_apply_refuses_topology_changes(lab: Lab, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(EXAMPLES, docs)
    hv2 = docs / "workloads-hv2.yaml"
    hv2.write_text(hv2.read_text().replace("host: hv2", "host: hv1", 1))  # web-2 migrates
    generation = lab.state().generation
    with pytest.raises(LabInputError, match="lab down"):
        lab.apply([docs])
    assert lab.state().generation == generation
    done = run_cli("lab", "apply", "-f", str(docs), "--name", lab.name)
    assert done.returncode == 2


def test_cli_probe(lab: Lab) -> None:
    cases = [
        (("lb-1", "web-2", "http"), 0, "allowed"),
        (("jump-1", "db-1", "ssh"), 1, "blocked"),
        (("web-1", "db-1", "tcp/5432"), 1, "rejected"),
    ]
    for (src, dst, service), code, result in cases:
        done = run_cli("lab", "probe", src, dst, service, "--name", lab.name, "--json")
        assert done.returncode == code, done.stderr
        data = json.loads(done.stdout)
        assert data["result"] == result
        assert (data["src"], data["dst"], data["service"]) == (src, dst, service)
    bad = run_cli("lab", "probe", "web-1", "nobody", "tcp/1", "--name", lab.name, "--json")
    assert bad.returncode == 2 and "nobody" in bad.stderr


def test_cli_status(lab: Lab) -> None:
    done = run_cli("lab", "status", "--name", lab.name, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    status = json.loads(done.stdout)
    assert status["healthy"] is True and status["phase"] == "ready"
    assert set(status["vms"]) == set(lab.catalog().workloads)
    assert all(vm["alive"] for vm in status["vms"].values())
    assert {a["host"] for a in status["agents"]} == {"hv1", "hv2"}
    assert all(a["in_sync"] and a["program_hash"] == a["expected_hash"] for a in status["agents"])
    assert all(status["namespaces"].values()) and status["stray"] == []


def test_up_refuses_a_lab_that_is_up(lab: Lab) -> None:
    done = run_cli("lab", "up", "-f", str(EXAMPLES), "--name", lab.name)
    assert done.returncode == 1 and "lab down" in done.stderr


def test_burst_of_default_drops_stays_closed(lab: Lab) -> None:
    """Regression: rate-limited logging must never skip the drop (it once failed open)."""
    probes = [("lb-1", "192.0.2.10", f"tcp/{port}") for port in range(20000, 20200)]
    assert set(lab.probe_many(probes)) == {"blocked"}
