"""`hyperwall token create|list|revoke`: the manager's API tokens."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from hyperwall.cli.common import fail, out, print_json, shown
from hyperwall.cli.remote_common import JsonOpt, ServerOpt, TokenFileOpt, connected


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(when))


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> int:
    """`30d`, `12h`, `90m`, `3600s` or `3600` -> seconds; ValueError otherwise."""
    value = text.strip().lower()
    number, unit = (value[:-1], value[-1]) if value[-1:] in _UNITS else (value, "s")
    if not number.isdigit() or int(number) == 0:
        raise ValueError(f"bad duration {text!r}: expected a positive number and s, m, h, d or w")
    return int(number) * _UNITS[unit]


token_app = typer.Typer(help="API tokens.", no_args_is_help=True)


@token_app.command("create")
def token_create(
    role: str = typer.Option(..., "--role", help="provider-admin, tenant-admin, auditor, agent"),
    tenant: str | None = typer.Option(None, "--tenant"),
    host: str | None = typer.Option(None, "--host"),
    expires: str | None = typer.Option(
        None, "--expires", help="lifetime, e.g. 30d, 12h, 90m (default: never expires)"
    ),
    server: str = ServerOpt,
    token_file: Path | None = TokenFileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create a token and print it (shown only now)."""
    try:
        lifetime = None if expires is None else parse_duration(expires)
    except ValueError as exc:
        fail(f"--expires: {exc}")
    with connected(server, token_file, as_json) as client:
        result = client.create_token(role, tenant, host, lifetime)
    if as_json:
        print_json(result.model_dump(mode="json"))
    else:
        out.print(shown(result.token))


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
    table = Table("ID", "ROLE", "TENANT", "HOST", "CREATED (UTC)", "EXPIRES (UTC)")
    for t in tokens:
        expires = "never" if t.expires is None else _utc(t.expires)
        if t.expires is not None and t.expires <= time.time():
            expires += " (expired)"
        row = (t.id, t.role, t.tenant or "-", t.host or "-", _utc(t.created), expires)
        table.add_row(*map(shown, row))
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
        out.print(f"revoked token {shown(token_id)}")
