"""Fixtures for the lab tests: real namespaces (root only), each lab removed even on failure.

Every lab a test makes is named `t<pid><suffix>`, so parallel test runs never share one;
`lab down` finds everything of a lab by its prefix, with or without its state file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from hyperwall.analysis.trace import trace
from hyperwall.lab import Lab
from hyperwall.lab.nsexec import list_namespaces

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
HYPERWALL = [sys.executable, "-m", "hyperwall"]
VERDICT_TO_RESULT = {"allow": "allowed", "drop": "blocked", "reject": "rejected"}


def needs_root() -> pytest.MarkDecorator:
    missing = [tool for tool in ("ip", "nft", "sysctl") if shutil.which(tool) is None]
    return pytest.mark.skipif(
        os.geteuid() != 0 or bool(missing),
        reason="lab tests need root and iproute2/nftables (creates network namespaces)",
    )


def lab_marks() -> list[pytest.MarkDecorator]:
    """The marks of a test that builds a namespace lab: root only; `lab`, `kernel`, `slow`."""
    return [needs_root(), pytest.mark.lab, pytest.mark.kernel, pytest.mark.slow]


def lab_name(suffix: str) -> str:
    name = f"t{os.getpid() % 10_000_000}{suffix}"
    assert len(name) <= 12
    return name


def lab_namespaces(lab: Lab) -> list[str]:
    return [n for n in list_namespaces() if lab.names.owns(n)]


@contextlib.contextmanager
def running_lab(suffix: str, sources: Sequence[Path] = (EXAMPLES,), **up: Any) -> Iterator[Lab]:
    """A lab named `lab_name(suffix)` built from `sources` (`Lab.up` keywords in `up`),
    taken down afterwards whatever happened, leaving no namespace."""
    lab = Lab(lab_name(suffix))
    lab.down()  # left-overs of an earlier run with the same pid
    try:
        lab.up(list(sources), **up)
        yield lab
    finally:
        lab.down()
        assert lab_namespaces(lab) == []


@contextlib.contextmanager
def vm_kept_home(lab: Lab, vm: str, home: str) -> Iterator[Lab]:
    """`vm` starts on `home` and is back there afterwards, whatever the test did (its host's
    agent restarted first if the test stopped it)."""
    assert lab.catalog().workloads[vm].host == home
    try:
        yield lab
    finally:
        if lab.agent_pid(home) is None and lab.state().agents:
            lab.start_agent(home)
            lab.wait()
        if lab.catalog().workloads[vm].host != home:
            lab.migrate(vm, home, state=False)


def assert_probes_match_trace(lab: Lab, probes: list[tuple[str, str, str]], **kw: Any) -> None:
    """Real probes (`Lab.probe_reports` keywords in `kw`) give `trace`'s verdicts, and the
    matrix has every kind of verdict."""
    catalog = lab.catalog()
    reports = lab.probe_reports(probes, **kw)
    expected = [VERDICT_TO_RESULT[trace(catalog, *p).verdict] for p in probes]
    mismatches = [
        (p, want, r.result, r.outcome.detail)
        for p, want, r in zip(probes, expected, reports, strict=True)
        if r.result != want
    ]
    assert mismatches == []
    assert {"allowed", "blocked", "rejected"} <= set(expected)


def probe_rows() -> list[tuple[str, str, str, str]]:
    """examples/probes.tsv: (from, to, service, expected result)."""
    rows = []
    for line in (EXAMPLES / "probes.tsv").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        src, dst, service, verdict = line.split("\t")[:4]
        rows.append((src, dst, service, VERDICT_TO_RESULT[verdict]))
    return rows


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HYPERWALL, *args], capture_output=True, text=True, cwd=ROOT)


@pytest.fixture
def lab_factory() -> Iterator[list[Lab]]:
    """Labs appended to the list are taken down after the test, whatever happened."""
    labs: list[Lab] = []
    try:
        yield labs
    finally:
        for lab in labs:
            lab.down()
