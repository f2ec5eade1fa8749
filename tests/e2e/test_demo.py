"""The one-command demo end to end: manager on loopback, lab, one agent per host over HTTP,
examples applied through the manager, every probe of examples/probes.tsv as trace says; with
`--vm libvirt` (four real guests) also the VM table: each VM's host and its identity from
libvirt."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hyperwall.cli.demo import IDENTITY, vm_rows
from hyperwall.io.files import load_catalog
from hyperwall.lab import libvirtd

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="builds network namespaces"),
    pytest.mark.lab,
    pytest.mark.kernel,
    pytest.mark.slow,
]


def test_demo_matrix_matches_trace() -> None:
    name = f"dm{os.getpid() % 100000}"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "hyperwall", "demo", "--exit", "--name", name],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "COLUMNS": "250"},
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "MISMATCH" not in done.stdout
        assert done.stdout.count("rejected") >= 1 and done.stdout.count("blocked") >= 1
    finally:
        subprocess.run(
            [sys.executable, "-m", "hyperwall", "lab", "down", "--name", name],
            cwd=ROOT,
            capture_output=True,
        )
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"hwl-{name}-" not in namespaces


# -- --vm libvirt: real guests -----------------------------------------------------------------

GUESTS = ROOT / "tests" / "lab" / "guests"
GUEST_PROBES = (
    "lb-1\tweb-1\thttp\tallow\tlb to web (same host)\n"
    "web-1\tdb-1\tpostgres\treject\tweb never reaches the db (across hosts)\n"
    "app-2\tdb-1\tpostgres\tallow\tapp tier to the db\n"
    "198.51.100.7\tdb-1\ttcp/5432\tdrop\tpci-guard\n"
    "198.51.100.7\tlb-1\thttps\tallow\toffice to lb\n"
)


def test_vm_rows_show_the_host_and_where_the_identity_came_from() -> None:
    catalog = load_catalog([GUESTS])
    running = {"state": "running", "managed": True, "taps": [{"dev": "vnet0", "mac": "x"}]}
    why = "domain 'web-1': no hyperwall metadata"
    reports: dict[str, dict[str, Any]] = {
        "hv1": {
            "domains": {"lb-1": running, "web-1": {**running, "managed": False}},
            "unmanaged": {"web-1": why},
        },
        "hv2": {
            "domains": {"db-1": {**running, "taps": [{"dev": "vnet0"}, {"dev": "vnet1"}]}},
            "unmanaged": {},
        },
    }
    rows = {r[0]: r for r in vm_rows(catalog, reports)}
    assert rows["acme/lb-1"] == ("acme/lb-1", "hv1", "running", "vnet0", IDENTITY)
    assert rows["acme/db-1"][1:4] == ("hv2", "running", "vnet0, vnet1")
    assert "unmanaged" in rows["acme/web-1"][4] and "no hyperwall metadata" in rows["acme/web-1"][4]
    assert rows["acme/app-2"][1] == "-" and "not found" in rows["acme/app-2"][4]


@pytest.mark.skipif(libvirtd.missing() is not None, reason=str(libvirtd.missing()))
def test_demo_with_real_guests(tmp_path: Path) -> None:
    """`demo --vm libvirt` on four guests: the probes match trace, and every VM's identity
    came from its libvirt domain's metadata, on the host the documents name."""
    probes = tmp_path / "probes.tsv"
    probes.write_text(GUEST_PROBES)
    name = f"dg{os.getpid() % 100000}"
    argv = ["demo", "--exit", "--name", name, "--vm", "libvirt", "-f", str(GUESTS)]
    try:
        done = subprocess.run(
            [sys.executable, "-m", "hyperwall", *argv, "--probes", str(probes)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "COLUMNS": "250"},
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "MISMATCH" not in done.stdout
        lines = [line for line in done.stdout.splitlines() if IDENTITY in line]
        hosts = {"acme/lb-1": "hv1", "acme/web-1": "hv1", "acme/app-2": "hv2", "acme/db-1": "hv2"}
        for key, host in hosts.items():
            (line,) = [line for line in lines if f" {key} " in line]
            assert f" {host} " in line and "running" in line and "vnet" in line
    finally:
        subprocess.run(
            [sys.executable, "-m", "hyperwall", "lab", "down", "--name", name],
            cwd=ROOT,
            capture_output=True,
        )
