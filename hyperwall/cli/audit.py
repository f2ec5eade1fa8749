"""`hyperwall audit [--verify] [--json]`: the manager's audit ledger, and its verification.

Without `--verify`: the records the token may see, newest first (revision, time, actor,
role, message, what changed). With `--verify`: the manager recomputes the hash chain and
checks the stored revisions and documents against it; exit 0 when intact, 1 naming the
first altered record. Exit codes otherwise as every remote command (`remote_common`).
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from hyperwall.cli.common import EXIT_VERDICT, err, out, print_json, shown
from hyperwall.cli.remote_common import JsonOpt, ServerOpt, TokenFileOpt, connected
from hyperwall.manager_api import AuditRecord, AuditVerification


def audit(
    verify: bool = typer.Option(False, "--verify", help="recompute the chain; exit 1 if altered"),
    limit: int = typer.Option(50, "--limit", min=1, max=1000),
    before: int | None = typer.Option(None, "--before", min=1, help="records below this one"),
    server: str = ServerOpt,
    token_file: Path | None = TokenFileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """The audit ledger: who changed what and when, hash-chained (`--verify` checks it)."""
    with connected(server, token_file, as_json) as client:
        if verify:
            result = client.audit_verify()
        else:
            records = client.audit(limit, before)
    if verify:
        _print_verification(result, as_json)
        if not result.intact:
            raise typer.Exit(EXIT_VERDICT)
        return
    if as_json:
        print_json([r.model_dump(mode="json") for r in records])
        return
    _print_records(records)


def _what(record: AuditRecord) -> str:
    parts = []
    for c in record.changes:
        sign = {"add": "+", "change": "~", "remove": "-"}[c["action"]]
        who = f"{c['tenant']}/{c['name']}" if c["tenant"] else c["name"]
        parts.append(f"{sign}{c['kind']} {who}")
    if record.hiddenChanges:
        parts.append(f"(+{record.hiddenChanges} of other tenants)")
    return ", ".join(parts)


def _print_records(records: list[AuditRecord]) -> None:
    table = Table("REV", "TIME (UTC)", "TOKEN", "ROLE", "MESSAGE", "CHANGES", "HASH")
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.time))
        role = r.actor.get("role") or "-"
        if r.actor.get("scope"):
            role += f"@{r.actor['scope']}"
        token = r.actor.get("token") or r.author
        table.add_row(
            str(r.revision), when, shown(token), shown(role), shown(r.message),
            shown(_what(r)), r.hash[:12],
        )  # fmt: skip
    out.print(table)


def _print_verification(result: AuditVerification, as_json: bool) -> None:
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    span = f"records {result.start}..{result.head}" if result.records else "no records"
    if result.intact:
        out.print(f"ledger intact: {result.records} {span}; head hash {result.headHash}")
        return
    err.print(f"ledger ALTERED: first altered record {result.firstAltered} ({span})")
    for f in result.findings:
        err.print(f"  record {f.record}: {shown(f.problem)}")
