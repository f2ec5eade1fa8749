"""`hyperwall get KIND [NAME]`: show documents stored on the manager."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from hyperwall.cli.common import out, print_json, shown
from hyperwall.cli.remote_common import JsonOpt, ServerOpt, TenantOpt, TokenFileOpt, connected


def get(
    kind: str = typer.Argument(..., help="Tenant, Workload, Group, Service or Policy"),
    name: str | None = typer.Argument(None),
    tenant: str | None = TenantOpt,
    selector: str | None = typer.Option(None, "-l", "--selector", help="label selector"),
    server: str = ServerOpt,
    token_file: Path | None = TokenFileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show documents (as docs/policy.md shapes them)."""
    with connected(server, token_file, as_json) as client:
        if name is not None:
            doc = client.document(kind, name, tenant)
            docs = [doc]
        else:
            docs = client.documents(kind, tenant, selector).documents
    if as_json:
        print_json(docs[0] if name is not None else docs)
        return
    table = Table("KIND", "TENANT", "NAME", "LABELS")
    for d in docs:
        meta = d.get("metadata", {})
        labels = ",".join(f"{k}={v}" for k, v in sorted((meta.get("labels") or {}).items()))
        row = (d.get("kind"), meta.get("tenant") or "-", meta.get("name"), labels)
        table.add_row(*map(shown, row))
    out.print(table)
