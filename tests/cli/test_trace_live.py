"""`hyperwall trace --live`: its options, exit codes and output without a lab (the run
through a manager and real agents is `tests/e2e/test_live_trace.py`)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from hyperwall.cli.app import app
from hyperwall.cli.trace import live_exit, render_live

runner = CliRunner()
BASE = ["trace", "--from", "web-1", "--to", "db-1", "--service", "tcp/5432"]


def test_live_takes_no_files_and_offline_needs_them() -> None:
    assert runner.invoke(app, [*BASE, "--live", "-f", "examples"]).exit_code == 2
    assert runner.invoke(app, BASE).exit_code == 2
    assert runner.invoke(app, [*BASE, "--live", "--timeout", "0"]).exit_code == 2


def test_an_unreachable_manager_is_exit_4() -> None:
    result = runner.invoke(app, [*BASE, "--live", "--server", "http://127.0.0.1:9", "--json"])
    assert result.exit_code == 4 and "unreachable" in result.stdout


def _answer(differences: list[str], missing: list[str]) -> dict[str, object]:
    return {
        "agrees": not differences,
        "offline": {
            "verdict": "reject",
            "egress": {"verdict": "reject", "rule": "a/b/c"},
            "ingress": {"verdict": "drop", "rule": "default"},
        },
        "live": {
            "egress": {
                "verdict": "reject",
                "rule": "a/b/c",
                "host": "hv1",
                "chain": "p_1",
                "handle": 4,
            },
            "ingress": None,
        },
        "differences": differences,
        "unchecked": ["ingress"],
        "probe": {
            "src": "10.1.0.21",
            "dst": "10.1.0.41",
            "proto": "tcp",
            "port": 5432,
            "tag": 40000,
        },
        "revision": 3,
        "hosts": {"hv1": {"hits": [], "path": [], "error": None}},
        "missing": missing,
    }


def test_exit_codes() -> None:
    assert live_exit(_answer([], [])) == 0
    assert live_exit(_answer(["egress: ..."], [])) == 1
    assert live_exit(_answer([], ["hv2"])) == 4


def test_render(capsys: pytest.CaptureFixture[str]) -> None:
    render_live(_answer(["ingress: it differs"], []))
    shown = capsys.readouterr().out
    assert "difference: ingress: it differs" in shown
    assert "live    reject by a/b/c (host hv1, p_1 #4)" in shown
    assert "(not reached)" in shown
    render_live(_answer([], []))
    assert "the kernel agrees with trace" in capsys.readouterr().out
