"""The one-command demo end to end: manager on loopback, lab, one agent per host over HTTP,
examples applied through the manager, every probe of examples/probes.tsv as trace says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
