"""`lab up --no-agents`: the same topology without a firewall lets everything through."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from hyperwall.lab import Lab

from .conftest import EXAMPLES, lab_marks, lab_name, lab_namespaces, probe_rows, run_cli

pytestmark = lab_marks()


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    lab = Lab(lab_name("n"))
    lab.down()
    try:
        done = run_cli("lab", "up", "-f", str(EXAMPLES), "--name", lab.name, "--no-agents")
        assert done.returncode == 0, done.stderr
        yield lab
    finally:
        lab.down()


def test_everything_is_allowed(lab: Lab) -> None:
    assert lab.state().agents == {}
    probes = [row[:3] for row in probe_rows()]
    keys = sorted(lab.catalog().workloads)
    for a, b in itertools.permutations(keys, 2):
        probes += [(a, b, "tcp/5432"), (a, b, "udp/53"), (a, b, "icmp/echo-request")]
    v6 = [("fd00:1::5", "fd00:1::42", "icmpv6/echo-request"), ("fd00:1::42", "fd00::53", "udp/53")]
    probes += [*v6, ("10.1.0.42", "192.0.2.10", "tcp/873"), ("2001:db8::1", "db-1", "tcp/22")]
    assert set(lab.probe_many(probes)) == {"allowed"}


def test_status_without_agents(lab: Lab) -> None:
    status = lab.status()
    assert status.healthy and status.agents == ()
    assert len(status.vms) == len(lab.catalog().workloads)


def test_cli_down_leaves_nothing(lab: Lab) -> None:
    done = run_cli("lab", "down", "--name", lab.name)
    assert done.returncode == 0, done.stderr
    assert lab_namespaces(lab) == []
    assert not lab.paths.dir.exists()
    again = run_cli("lab", "down", "--name", lab.name)  # idempotent
    assert again.returncode == 0, again.stderr
