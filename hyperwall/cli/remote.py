"""Client commands against a running manager: apply, get, delete, diff, history, rollback,
status, token create/list/revoke. Each takes `--server` / `--token-file` (or HYPERWALL_SERVER /
HYPERWALL_TOKEN) and `--json`. Exit codes: 0 ok, 1 not the good state, 2 bad input,
3 not allowed, 4 server unreachable (or its store: a 503)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from hyperwall.cli.common import EXIT_INPUT, EXIT_VERDICT, err, fail, out, print_json
from hyperwall.client import (
    Invalid,
    ManagerClient,
    NotAllowed,
    NotFound,
    StoreUnavailable,
    Unreachable,
)
from hyperwall.client.api import ClientError
from hyperwall.io.files import read_documents

EXIT_NOT_ALLOWED = 3
EXIT_UNREACHABLE = 4
DEFAULT_SERVER = "http://127.0.0.1:8470"

ServerOpt = typer.Option(DEFAULT_SERVER, "--server", envvar="HYPERWALL_SERVER", help="manager URL")
TokenFileOpt = typer.Option(
    None, "--token-file", help="file holding the API token (else env HYPERWALL_TOKEN)"
)
JsonOpt = typer.Option(False, "--json", help="machine-readable output")
TenantOpt = typer.Option(None, "--tenant", help="the document's tenant (none: provider)")
FilesOpt = typer.Option(..., "-f", "--file", help="document file or folder (repeatable)")

token_app = typer.Typer(help="API tokens.", no_args_is_help=True)


def _token(token_file: Path | None) -> str | None:
    if token_file is not None:
        try:
            return token_file.read_text().strip()
        except OSError as exc:
            fail(f"cannot read token file: {exc}")
    return os.environ.get("HYPERWALL_TOKEN") or None


def _print_issues(errors: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json({"errors": errors})
        return
    for e in errors:
        where = f"{e.get('file', 'request')} document {e.get('document', 0)}"
        if e.get("path"):
            where += f": {e['path']}"
        text = f"{where}: {e.get('message', '')}"
        if e.get("expected"):
            text += f" (expected {e['expected']})"
        err.print(f"[red]error:[/red] {escape(text)}", markup=True)
    err.print(f"{len(errors)} error(s); nothing was applied")


@contextmanager
def connected(server: str, token_file: Path | None, as_json: bool) -> Iterator[ManagerClient]:
    """A client; maps every client error to its exit code after printing it."""
    client = ManagerClient(server, _token(token_file))
    try:
        yield client
    except Invalid as exc:
        _print_issues(exc.errors, as_json)
        raise typer.Exit(EXIT_INPUT) from None
    except NotAllowed as exc:
        what = "not authenticated" if exc.status == 401 else "not allowed"
        _report(f"{what}: {exc}", as_json, EXIT_NOT_ALLOWED)
    except StoreUnavailable as exc:
        _report(f"the manager cannot reach its store (503): {exc}", as_json, EXIT_UNREACHABLE)
    except Unreachable as exc:
        _report(f"server unreachable: {exc}", as_json, EXIT_UNREACHABLE)
    except NotFound as exc:
        _report(str(exc), as_json, EXIT_VERDICT)
    except ClientError as exc:
        _report(str(exc), as_json, EXIT_VERDICT)
    finally:
        client.close()


def _report(message: str, as_json: bool, code: int) -> None:
    if as_json:
        print_json({"error": message})
        raise typer.Exit(code)
    fail(message, code)


def _read(paths: list[Path], as_json: bool) -> list[Any]:
    docs, issues = read_documents(paths)
    if issues:
        _print_issues([i.to_json() for i in issues], as_json)
        raise typer.Exit(EXIT_INPUT)
    return [doc for doc, _ in docs]


def _summary(result: dict[str, Any]) -> str:
    changes = result.get("changes", [])
    counts = {a: sum(1 for c in changes if c["action"] == a) for a in ("add", "change", "remove")}
    text = ", ".join(f"{n} {a}" for a, n in counts.items() if n) or "no changes"
    hosts = result.get("hostsChanged", [])
    return f"{text}; hosts whose program changes: {', '.join(hosts) if hosts else 'none'}"


def _name(change: dict[str, Any]) -> str:
    tenant = f"{change['tenant']}/" if change.get("tenant") else ""
    return f"{change['kind']} {tenant}{change['name']}"


def apply(
    files: list[Path] = FilesOpt,
    message: str = typer.Option("", "-m", "--message", help="revision message"),
    wait: bool = typer.Option(False, "--wait", help="wait until affected hosts realize it"),
    timeout: float = typer.Option(120.0, "--timeout", help="seconds --wait waits"),
    server: str = ServerOpt,
    token_file: Path | None = TokenFileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Upsert documents (all or nothing) as one new revision."""
    docs = _read(files, as_json)
    with connected(server, token_file, as_json) as client:
        result = client.apply(docs, message)
        realized = True
        if wait and result["created"]:
            realized = _wait(client, result["revision"], result["hostsChanged"], timeout, as_json)
    if as_json:
        print_json({**result, "realized": realized} if wait else result)
    elif result["created"]:
        out.print(f"revision {result['revision']}: {escape(_summary(result))}")
    else:
        out.print(f"no change: identical to revision {result['revision']}; no revision created")
    if not realized:
        raise typer.Exit(EXIT_VERDICT)


def _wait(
    client: ManagerClient, revision: int, hosts: list[str], timeout: float, as_json: bool
) -> bool:
    deadline = time.monotonic() + timeout
    pending = set(hosts)
    while pending:
        by_host = {h["host"]: h for h in client.status()["hosts"]}
        for host in list(pending):
            h = by_host.get(host)
            if h and (h["revision"] or 0) >= revision and h["converged"] and not h["error"]:
                pending.discard(host)
        if not pending:
            break
        if time.monotonic() >= deadline:
            if not as_json:
                err.print(f"timed out; not yet realized on: {', '.join(sorted(pending))}")
            return False
        time.sleep(0.5)
    return True


def diff(
    files: list[Path] = FilesOpt,
    server: str = ServerOpt,
    token_file: Path | None = TokenFileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """What applying the documents would change, and which hosts' programs."""
    docs = _read(files, as_json)
    with connected(server, token_file, as_json) as client:
        result = client.diff(docs)
    if as_json:
        print_json(result)
        return
    for change in result["changes"]:
        sign = {"add": "+", "change": "~", "remove": "-"}[change["action"]]
        out.print(f"{sign} {escape(_name(change))}")
    out.print(escape(_summary(result)))


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
            docs = client.documents(kind, tenant, selector)["documents"]
    if as_json:
        print_json(docs[0] if name is not None else docs)
        return
    table = Table("KIND", "TENANT", "NAME", "LABELS")
    for d in docs:
        meta = d.get("metadata", {})
        labels = ",".join(f"{k}={v}" for k, v in sorted((meta.get("labels") or {}).items()))
        table.add_row(d.get("kind"), meta.get("tenant") or "-", meta.get("name"), labels)
    out.print(table)


def delete(
    kind: str = typer.Argument(...),
    name: str = typer.Argument(...),
    tenant: str | None = TenantOpt,
    message: str = typer.Option("", "-m", "--message"),
    server: str = ServerOpt,
    token_file: Path | None = TokenFileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Delete one document as a new revision (the rest must still validate)."""
    with connected(server, token_file, as_json) as client:
        result = client.delete(kind, name, tenant, message)
    if as_json:
        print_json(result)
    else:
        out.print(f"revision {result['revision']}: {escape(_summary(result))}")


def history(
    limit: int = typer.Option(50, "--limit"),
    server: str = ServerOpt,
    token_file: Path | None = TokenFileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Revisions, newest first."""
    with connected(server, token_file, as_json) as client:
        entries = client.history(limit)
    if as_json:
        print_json([{k: e[k] for k in ("revision", "author", "time", "message")} for e in entries])
        return
    table = Table("REV", "TIME (UTC)", "AUTHOR", "MESSAGE", "+/~/-")
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["time"]))
        counts = f"{len(e['added'])}/{len(e['changed'])}/{len(e['removed'])}"
        table.add_row(str(e["revision"]), when, e["author"], e["message"], counts)
    out.print(table)


def rollback(
    revision: int = typer.Argument(..., help="the revision whose documents to restore"),
    message: str | None = typer.Option(None, "-m", "--message"),
    server: str = ServerOpt,
    token_file: Path | None = TokenFileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Commit revision N's documents as a new revision."""
    with connected(server, token_file, as_json) as client:
        result = client.rollback(revision, message)
    if as_json:
        print_json(result)
    elif result["created"]:
        hosts = ", ".join(result["hostsChanged"]) or "none"
        out.print(f"revision {result['revision']}: rolled back to {revision}; hosts: {hosts}")
    else:
        out.print(f"no change: already identical to revision {revision}")


def status(
    server: str = ServerOpt,
    token_file: Path | None = TokenFileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Per-host realization status; exit 1 unless every host is in sync."""
    with connected(server, token_file, as_json) as client:
        result = client.status()
    if as_json:
        print_json(result)
    else:
        out.print(f"current revision {result['revision']}")
        table = Table("HOST", "STATE", "REVISION", "PROGRAM", "ENDPOINTS", "ERROR")
        for h in result["hosts"]:
            table.add_row(
                h["host"],
                h["state"],
                str(h["revision"] if h["revision"] is not None else "-"),
                h["programHash"] or "-",
                str(h["endpoints"]),
                escape(h["error"] or ""),
            )
        out.print(table)
    if any(h["state"] != "in-sync" for h in result["hosts"]):
        raise typer.Exit(EXIT_VERDICT)


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
        print_json(result)
    else:
        out.print(result["token"])


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
        print_json(tokens)
        return
    table = Table("ID", "ROLE", "TENANT", "HOST", "CREATED (UTC)")
    for t in tokens:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t["created"]))
        table.add_row(t["id"], t["role"], t["tenant"] or "-", t["host"] or "-", when)
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
