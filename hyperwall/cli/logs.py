"""`hyperwall logs`: flow records from the manager (`GET /v1/flows`), filtered, as text
lines (`flows.text`) or JSON lines (`--json`: one record per line); `--follow` keeps asking
for the records stored since (the answer's cursor) every `--interval` seconds until
Ctrl-C. A tenant-admin's token sees only its tenant's workloads' records. Exit codes as
the other client commands (`remote_common`)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer

from hyperwall.cli.common import EXIT_INPUT, fail, out, shown
from hyperwall.cli.remote_common import JsonOpt, ServerOpt, TokenFileOpt, connected
from hyperwall.client import ManagerClient
from hyperwall.flows.api import FlowsPage
from hyperwall.flows.filter import parse_when
from hyperwall.flows.text import record_line

MAX_LIMIT = 10_000


def fetch(client: ManagerClient, params: dict[str, Any]) -> FlowsPage:
    query = {k: v for k, v in params.items() if v is not None}
    return FlowsPage.model_validate(client.request("GET", "/v1/flows", params=query))


def _print(records: list[dict[str, Any]], as_json: bool) -> None:
    for record in records:
        if as_json:
            sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
        else:
            out.print(shown(record_line(record)))
    sys.stdout.flush()


# The filters, shared with `hyperwall lab logs` (`cli.lab`).
TenantFilterOpt = typer.Option(None, "--tenant", help="a tenant; '-': provider workloads")
WorkloadFilterOpt = typer.Option(None, "--workload", help="tenant/name, or a name in any tenant")
RuleFilterOpt = typer.Option(
    None, "--rule", help="a rule id, or a prefix of it (tenant/policy: that policy's rules)"
)
ActionFilterOpt = typer.Option(None, "--action", help="allow, drop, reject, ...")
SinceOpt = typer.Option(
    None, "--since", help="how far back: 30s, 10m, 2h, 7d, or a time (2026-12-03T07:00:00Z)"
)
UntilOpt = typer.Option(None, "--until", help="up to (excluded): like --since")


def time_bounds(since: str | None, until: str | None, now_us: int) -> list[int | None]:
    """[since, until] in microseconds (None where not given); exit 2 naming a bad one."""
    bounds: list[int | None] = []
    for name, value in (("--since", since), ("--until", until)):
        try:
            bounds.append(parse_when(value, now_us) if value is not None else None)
        except ValueError as exc:
            fail(f"{name}: {exc}", EXIT_INPUT)
    return bounds


def logs(
    tenant: str | None = TenantFilterOpt,
    workload: str | None = WorkloadFilterOpt,
    rule: str | None = RuleFilterOpt,
    action: str | None = ActionFilterOpt,
    since: str | None = SinceOpt,
    until: str | None = UntilOpt,
    limit: int = typer.Option(100, "--limit", help=f"the newest N records (at most {MAX_LIMIT})"),
    follow: bool = typer.Option(False, "--follow", help="keep printing new records"),
    interval: float = typer.Option(1.0, "--interval", help="seconds between --follow requests"),
    server: str = ServerOpt,
    token_file: Path | None = TokenFileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Flow records the manager keeps from every agent (logged decisions, connections)."""
    time_bounds(since, until, int(time.time() * 1_000_000))  # checked here, sent as given
    if not 1 <= limit <= MAX_LIMIT:
        fail(f"--limit: between 1 and {MAX_LIMIT}", EXIT_INPUT)
    if interval <= 0:
        fail("--interval must be positive", EXIT_INPUT)
    params: dict[str, Any] = {
        "tenant": tenant,
        "workload": workload,
        "rule": rule,
        "action": action,
        "since": since,
        "until": until,
        "limit": limit,
    }
    with connected(server, token_file, as_json) as client:
        page = fetch(client, params)
        _print(page.records, as_json)
        if not follow:
            return
        cursor = page.cursor
        try:
            while True:
                page = fetch(client, {**params, "limit": MAX_LIMIT, "after": cursor})
                _print(page.records, as_json)
                if page.cursor == cursor:
                    time.sleep(interval)
                cursor = page.cursor
        except KeyboardInterrupt:
            return
