"""Failure and cleanup: `lab down` after a crash, `up` failing halfway, bad documents."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from hyperwall.lab import Lab, build
from hyperwall.lab.nsexec import alive, namespace_pids

from .conftest import lab_marks, lab_name, lab_namespaces, run_cli

pytestmark = lab_marks()

SMALL = """
apiVersion: hyperwall.io/v1
kind: Tenant
metadata: {name: t}
---
apiVersion: hyperwall.io/v1
kind: Workload
metadata: {name: a, tenant: t, labels: {role: a}}
spec:
  host: h1
  interfaces: [{name: eth0, mac: "52:54:00:aa:00:01", ips: [10.9.0.1, "fd00:9::1"]}]
---
apiVersion: hyperwall.io/v1
kind: Workload
metadata: {name: b, tenant: t, labels: {role: b}}
spec:
  host: h2
  interfaces: [{name: eth0, mac: "52:54:00:aa:00:02", ips: [10.9.0.2, "fd00:9::2"]}]
---
apiVersion: hyperwall.io/v1
kind: Policy
metadata: {name: p, tenant: t}
spec:
  rules:
    - name: a-to-b
      action: allow
      from: [{selector: role == "a"}]
      to: [{selector: role == "b"}]
      services: [tcp/80]
"""


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    return path


def test_down_after_a_crash(small: Path, lab_factory: list[Lab]) -> None:
    lab = Lab(lab_name("c"))
    lab_factory.append(lab)
    lab.up([small])
    assert lab.probe_many([("a", "b", "tcp/80"), ("b", "a", "tcp/80")]) == ["allowed", "blocked"]
    state = lab.state()
    pids = state.pids()
    for agent in state.agents.values():
        assert agent.pid is not None
        os.kill(agent.pid, signal.SIGKILL)
    lab.paths.state_file.unlink()
    done = run_cli("lab", "down", "--name", lab.name)
    assert done.returncode == 0, done.stderr
    assert lab_namespaces(lab) == []
    assert not lab.paths.dir.exists()
    assert [p for p in pids if alive(p)] == []


def test_down_removes_left_overs_without_state(lab_factory: list[Lab]) -> None:
    lab = Lab(lab_name("s"))
    lab_factory.append(lab)
    stray = lab.names.host_ns("gone")
    subprocess.run(["ip", "netns", "add", stray], check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", stray, "sleep", "300"])
    try:
        while sleeper.pid not in namespace_pids([stray])[stray]:  # until it is inside
            assert sleeper.poll() is None
            time.sleep(0.01)
        lab.paths.dir.mkdir(parents=True)
        assert lab_namespaces(lab) == [stray]
        lab.down()
        assert lab_namespaces(lab) == []
        assert sleeper.wait(timeout=30) == -signal.SIGTERM  # the process inside was stopped
        assert not lab.paths.dir.exists()
    finally:
        if sleeper.poll() is None:
            sleeper.kill()


def test_up_failing_halfway_cleans_up(
    small: Path, lab_factory: list[Lab], monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = Lab(lab_name("f"))
    lab_factory.append(lab)

    def broken(*args: object) -> None:
        raise RuntimeError("responders broke")

    monkeypatch.setattr(build, "start_responders", broken)
    with pytest.raises(RuntimeError, match="responders broke"):
        lab.up([small])
    assert lab_namespaces(lab) == []
    assert not lab.paths.dir.exists()


def test_bad_documents_exit_2_and_build_nothing(tmp_path: Path, lab_factory: list[Lab]) -> None:
    lab = Lab(lab_name("b"))
    lab_factory.append(lab)
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: hyperwall.io/v1\nkind: Workload\nmetadata: {name: Bad_Name}\n")
    done = run_cli("lab", "up", "-f", str(bad), "--name", lab.name)
    assert done.returncode == 2
    assert "error" in done.stderr and "bad.yaml" in done.stderr
    assert lab_namespaces(lab) == [] and not lab.paths.dir.exists()
    wrong = run_cli("lab", "status", "--name", "no-dashes")
    assert wrong.returncode == 2
