"""`hyperwall lab logs` input errors: a bad --since/--until or --limit exits 2 naming the
option, before any lab is looked at (the records themselves: tests/lab/test_flowlog.py)."""

from __future__ import annotations

from typer.testing import CliRunner

from hyperwall.cli.app import app


def test_bad_bounds_and_limit_exit_2() -> None:
    runner = CliRunner()
    got = runner.invoke(app, ["lab", "logs", "--name", "hwcnone", "--since", "10 parsecs"])
    assert got.exit_code == 2 and "--since" in got.output and "parsecs" in got.output
    got = runner.invoke(app, ["lab", "logs", "--name", "hwcnone", "--until", "yesterday"])
    assert got.exit_code == 2 and "--until" in got.output
    got = runner.invoke(app, ["lab", "logs", "--name", "hwcnone", "--limit", "-1"])
    assert got.exit_code == 2 and "--limit" in got.output
