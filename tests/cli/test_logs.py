"""`hyperwall logs` against a live manager: filters, text and JSON lines, a tenant's view,
bad input (exit 2), and `--follow` printing records shipped after it started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hyperwall.cli.app import app
from hyperwall.flows.filter import us_time
from hyperwall.io.files import read_documents
from tests.agent.test_manager_source import hyperwall, wait_for
from tests.manager.conftest import EXAMPLES, Live, start_server
from tests.manager.support import call
from tests.store.conftest import sqlite_urls

runner = CliRunner()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    yield from start_server(sqlite_urls(tmp_path)(), tmp_path / "admin.token")


T0 = 1_796_000_000_000_000


def rec(n: int, workload: str, action: str = "drop") -> dict[str, Any]:
    return {
        "time": us_time(T0 + n * 1000),
        "host": "hv1",
        "workload": workload,
        "direction": "in",
        "action": action,
        "rule": f"{workload.split('/')[0]}/p/r",
        "src": "10.1.0.21",
        "dst": "10.1.0.41",
        "proto": "tcp",
        "sport": 4000 + n,
        "dport": 5432,
    }


def ship(live: Live, token: str, start: int, records: list[dict[str, Any]]) -> None:
    body = {"file": "f", "offset": start, "end": start + 1, "records": records}
    assert call(live.url, token, "POST", "/v1/agent/hv1/flows", body).status_code == 200


def setup(live: Live) -> dict[str, str]:
    docs, _ = read_documents([EXAMPLES / "tenants.yaml"])
    call(live.url, live.admin, "POST", "/v1/apply", {"documents": [d for d, _ in docs]})
    tokens = {}
    for name, body in (
        ("agent", {"role": "agent", "host": "hv1"}),
        ("acme", {"role": "tenant-admin", "tenant": "acme"}),
    ):
        tokens[name] = call(live.url, live.admin, "POST", "/v1/tokens", body).json()["token"]
    return tokens


def hw(live: Live, token: str, *args: str) -> Any:
    env = {"HYPERWALL_SERVER": live.url, "HYPERWALL_TOKEN": token}
    return runner.invoke(app, ["logs", *args], env=env)


def test_logs_filters_and_views(live: Live) -> None:
    tokens = setup(live)
    ship(
        live,
        tokens["agent"],
        0,
        [rec(1, "acme/db-1"), rec(2, "globex/db-1"), rec(3, "acme/web-1", "allow")],
    )
    r = hw(live, live.admin, "--json")
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["workload"] for x in lines] == ["acme/db-1", "globex/db-1", "acme/web-1"]
    r = hw(live, live.admin, "--action", "allow")
    assert r.exit_code == 0 and r.stdout.splitlines() == [
        f"{us_time(T0 + 3000)[:-4]}Z hv1 acme/web-1 in allow acme/p/r"
        " tcp 10.1.0.21:4003 -> 10.1.0.41:5432"
    ]
    r = hw(live, tokens["acme"], "--json", "--workload", "db-1")
    assert [json.loads(x)["workload"] for x in r.stdout.splitlines()] == ["acme/db-1"]
    r = hw(live, tokens["acme"], "--tenant", "globex")
    assert r.exit_code == 3 and "globex" in r.output
    r = hw(live, live.admin, "--since", "ten minutes")
    assert r.exit_code == 2 and "--since" in r.output
    r = hw(live, live.admin, "--limit", "1", "--json")
    assert [json.loads(x)["workload"] for x in r.stdout.splitlines()] == ["acme/web-1"]


# Ctrl-C is what stops `logs --follow`; a test runner started in the background (`cmd &` in
# a shell without job control) has SIGINT ignored, and its children inherit that: restore
# the default before the CLI starts, so Python installs its KeyboardInterrupt handler.
DEFAULT_SIGINT = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])",
]


def test_follow_prints_what_arrives(live: Live, tmp_path: Path) -> None:
    tokens = setup(live)
    ship(live, tokens["agent"], 0, [rec(1, "acme/db-1")])
    env = {**os.environ, "HYPERWALL_SERVER": live.url, "HYPERWALL_TOKEN": tokens["acme"]}
    errors = tmp_path / "stderr"  # a file, not a pipe nobody reads: it never blocks the CLI
    with errors.open("wb") as stderr:
        proc = subprocess.Popen(
            [*DEFAULT_SIGINT, *hyperwall(), "logs", "--follow", "--json", "--interval", "0.2"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["sport"] == 4001
        ship(live, tokens["agent"], 1, [rec(2, "globex/db-1"), rec(3, "acme/db-1")])
        later = json.loads(proc.stdout.readline())  # globex's record is not acme's to see
        assert later["sport"] == 4003 and later["workload"] == "acme/db-1"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            wait_for(lambda: proc.poll() is not None, "logs --follow to stop")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, errors.read_text()
