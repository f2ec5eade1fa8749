"""`hyperwall token create|list|revoke`: the manager's API tokens."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from hyperwall.cli.common import out, print_json
from hyperwall.cli.remote_common import JsonOpt, ServerOpt, TokenFileOpt, connected

token_app = typer.Typer(help="API tokens.", no_args_is_help=True)


@token_app.command("create")
def token_create(
    role: str = typer.Option(..., "--role", help="provider-admin, tenant-admin, auditor, agent"),
    tenant: str | None = typer.Option(None, "--tenant"),
    host: str | None = typer.Option(None, "--host"),
    server: str = ServerOpt,
    token_file: Path | None = TokenFileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create a token and print it (shown only now)."""
    with connected(server, token_file, as_json) as client:
        result = client.create_token(role, tenant, host)
    if as_json:
        print_json(result.model_dump(mode="json"))
    else:
        out.print(result.token)


@token_app.command("list")
def token_list(
    server: str = ServerOpt,
    token_file: Path | None = TokenFileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List tokens: id, role, tenant, host, creation time (never the secrets)."""
    with connected(server, token_file, as_json) as client:
        tokens = client.tokens()
    if as_json:
        print_json([t.model_dump(mode="json") for t in tokens])
        return
    table = Table("ID", "ROLE", "TENANT", "HOST", "CREATED (UTC)")
    for t in tokens:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t.created))
        table.add_row(t.id, t.role, t.tenant or "-", t.host or "-", when)
    out.print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: str = typer.Argument(..., metavar="ID", help="the token's id (token list)"),
    server: str = ServerOpt,
    token_file: Path | None = TokenFileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Revoke a token: refused (401) from its next request on."""
    with connected(server, token_file, as_json) as client:
        client.revoke_token(token_id)
    if as_json:
        print_json({"revoked": token_id})
    else:
        out.print(f"revoked token {escape(token_id)}")
