"""`hyperwall stats [--tenant T] [--policy P] [--unused DAYS] [--json]`: per-rule hit counters
summed over the hosts, through the manager (`GET /v1/stats`); and `hyperwall lab stats`,
the same table from the lab agents' own `hits.json` files.

Each row is a rule of the current policy (or a tenant's `default`): packets and bytes of the
new connections it decided, and when it was last hit (the time an agent first saw its
counter move). `--unused DAYS` lists only the rules with no hit in that many days: the
candidates for cleanup.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from hyperwall.agent.hits import read_report
from hyperwall.cli.common import EXIT_INPUT, fail, out, print_json, shown
from hyperwall.cli.remote_common import JsonOpt, ServerOpt, TokenFileOpt, connected
from hyperwall.manager.stats import HostHits, rows
from hyperwall.policy.model import Catalog

TenantOpt = typer.Option(None, "--tenant", help="Only this tenant's rules and default")
PolicyOpt = typer.Option(None, "--policy", help="Only this policy's rules (tenant/name, or name)")
UnusedOpt = typer.Option(
    None, "--unused", help="Only rules with no hit in the last DAYS days (cleanup candidates)"
)


def _when(value: float | None, now: float) -> str:
    if value is None:
        return "never"
    stamp = datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return f"{stamp} ({_ago(now - value)} ago)"


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def render(body: Mapping[str, Any], as_json: bool, now: float) -> None:
    """Print a `GET /v1/stats` answer (or the lab's equivalent)."""
    if as_json:
        print_json(body)
        return
    table = Table("RULE", "TENANT", "PACKETS", "BYTES", "LAST HIT", "HOSTS")
    for row in body["rules"]:
        table.add_row(
            shown(row["rule"]),
            shown(row["tenant"] or "-"),
            str(row["packets"]),
            str(row["bytes"]),
            _when(row["lastHit"], now),
            str(row["hosts"]),
        )
    out.print(table)
    hosts = body.get("hosts") or {}
    out.print(f"{len(body['rules'])} rules, counters of {len(hosts)} hosts")


def check_unused(unused: float | None) -> None:
    if unused is not None and unused < 0:
        fail("--unused takes a number of days, at least 0", EXIT_INPUT)


def stats(
    tenant: str | None = TenantOpt,
    policy: str | None = PolicyOpt,
    unused: float | None = UnusedOpt,
    server: str = ServerOpt,
    token_file: Path | None = TokenFileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Per-rule hit counters (packets, bytes, last hit) summed over the hosts."""
    check_unused(unused)
    params: dict[str, Any] = {"tenant": tenant, "policy": policy, "unused": unused}
    with connected(server, token_file, as_json) as client:
        body = client.request(
            "GET", "/v1/stats", params={k: v for k, v in params.items() if v is not None}
        )
    assert isinstance(body, dict)
    render(body, as_json, time.time())


def lab_body(
    hits_files: Mapping[str, Path],
    catalog: Catalog,
    tenant: str | None,
    policy: str | None,
    unused: float | None,
    now: float,
) -> dict[str, Any]:
    """What `GET /v1/stats` would answer for the lab: its agents' `hits.json` (host ->
    path) summed, joined with the lab's policy (`catalog`)."""
    board: dict[str, HostHits] = {}
    for host, path in sorted(hits_files.items()):
        read, rules = read_report(path)
        if read is not None:
            board[host] = HostHits(
                read, {k: (v["packets"], v["bytes"], v["lastHit"]) for k, v in rules.items()}
            )
    if policy is not None and "/" not in policy and tenant is not None:
        policy = f"{tenant}/{policy}"
    found = rows(
        board,
        catalog,
        visible=lambda _: True,
        tenant=tenant,
        policy=policy,
        unused_days=unused,
        now=now,
    )
    return {
        "revision": -1,
        "hosts": {h: r.read for h, r in board.items()},
        "rules": [r.to_json() for r in found],
    }
