"""Findings 4, 5 and 9 of issue 12 in the CLI: stored strings with rich markup or terminal
escapes print as text, never crash or reach the terminal raw; bad files exit 2 naming the
field; tokens expire (`token create --expires`), shown by `token list`, refused after."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hyperwall.cli.app import app
from hyperwall.cli.token import parse_duration
from tests.security.conftest import Fleet, workload

runner = CliRunner()
MARKUP = "[/x]"
ESC = "\x1b[31m"


def hw(fleet: Fleet, *args: str, who: str = "provider"):
    env = {"HYPERWALL_SERVER": fleet.url, "HYPERWALL_TOKEN": fleet.tokens[who]}
    return runner.invoke(app, list(args), env=env)


def test_stored_markup_and_escapes_print_as_text(fleet: Fleet) -> None:
    doc = workload("shown", "acme", "10.77.201.1", "52:54:00:77:02:01", a=MARKUP, b=ESC)
    r = fleet.call("acme", "POST", "/v1/apply", {"documents": [doc], "message": f"m {MARKUP}"})
    assert r.status_code == 200, r.text
    status = {"revision": 1, "converged": False, "error": f"boom {MARKUP} {ESC}"}
    assert fleet.call("agent", "PUT", "/v1/agent/hv1/status", status).status_code == 204
    for args, who in (
        (("history",), "provider"),
        (("history",), "globex"),  # another tenant's message in the provider's view too
        (("get", "workload", "--tenant", "acme"), "acme"),
        (("status",), "provider"),
        (("token", "list"), "provider"),
    ):
        r = hw(fleet, *args, who=who)
        assert r.exit_code in (0, 1), (args, r.output)  # status: 1 unless all in sync
        assert r.exception is None or isinstance(r.exception, SystemExit), (args, r.exception)
        assert "\x1b" not in r.output, args
    assert MARKUP in hw(fleet, "history").output
    out = hw(fleet, "get", "workload", "--tenant", "acme", who="acme").output
    assert MARKUP in out and "\\x1b[31m" in out
    assert MARKUP in hw(fleet, "status").output


def test_every_help_text_renders() -> None:
    for command in ("manager", "apply", "get", "status", "history", "token", "agent", "lab"):
        r = runner.invoke(app, [command, "--help"])
        assert r.exit_code == 0, (command, r.output)
    assert "[/PREFIX]" in runner.invoke(app, ["manager", "--help"]).output


@pytest.mark.parametrize(
    ("text", "name", "expect"),
    [
        ('{"kind": "Tenant", "metadata": {"name": "\\ud800"}}', "s.json", "metadata.name"),
        ('{"kind": "Policy", "spec": {"priority": NaN}}', "n.json", "NaN"),
        ('kind: Tenant\nmetadata: {name: "\\ud800"}\n', "s.yaml", "metadata.name"),
    ],
)
def test_bad_files_exit_2_naming_the_field(
    fleet: Fleet, tmp_path: Path, text: str, name: str, expect: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    for command in ("apply", "validate"):
        r = hw(fleet, command, "-f", str(path))
        assert r.exit_code == 2, (command, r.output)
        assert expect in r.output and str(path) in r.output


def test_tokens_expire_and_list_shows_when(fleet: Fleet) -> None:
    r = hw(fleet, "token", "create", "--role", "auditor", "--expires", "30d", "--json")
    assert r.exit_code == 0, r.output
    made = json.loads(r.stdout)
    assert made["expires"] - made["created"] == pytest.approx(30 * 86400, abs=5)
    listed = hw(fleet, "token", "list")
    assert made["id"] in listed.output and "never" in listed.output
    assert hw(fleet, "token", "create", "--role", "auditor", "--expires", "soon").exit_code == 2

    short = fleet.call("provider", "POST", "/v1/tokens", {"role": "auditor", "expiresIn": 1})
    assert short.status_code == 201
    fleet.tokens["short"] = short.json()["token"]
    assert fleet.call("short", "GET", "/v1/status").status_code == 200
    time.sleep(1.2)  # past its expiry: the outcome, not a duration, is asserted
    refused = fleet.call("short", "GET", "/v1/status")
    assert refused.status_code == 401 and refused.json() == {"error": "expired token"}
    assert "(expired)" in hw(fleet, "token", "list").output


def test_durations() -> None:
    assert parse_duration("30d") == 30 * 86400
    assert parse_duration("12h") == 43200 and parse_duration("90") == 90
    for bad in ("", "0d", "-1d", "1y", "d"):
        with pytest.raises(ValueError):
            parse_duration(bad)
