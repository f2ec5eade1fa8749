"""`hyperwall manager`: run the control plane's HTTP API."""

from __future__ import annotations

from pathlib import Path

import typer

from hyperwall.cli.common import fail
from hyperwall.flows.filter import parse_when


def retention_seconds(text: str) -> float:
    """`7d` -> seconds (a duration as `--since` takes it)."""
    seconds = -parse_when(text, 0) / 1_000_000
    if seconds <= 0 or "T" in text:
        raise ValueError(f"{text!r}: expected a duration (30m, 12h, 7d)")
    return seconds


def manager(
    listen: str = typer.Option("127.0.0.1:8470", "--listen", help="HOST:PORT to listen on"),
    store: str = typer.Option(..., "--store", help=r"sqlite:///PATH or etcd://HOST:PORT\[/PREFIX]"),
    bootstrap_token_file: Path | None = typer.Option(
        None,
        "--bootstrap-token-file",
        help="on first start (no tokens in the store) write a provider-admin token here, 0600",
    ),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="PEM certificate (chain)"),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="PEM private key"),
    flows: Path | None = typer.Option(
        None,
        "--flows",
        help="the flow records' database (default: beside a SQLite store, STORE.flows.db;"
        " none for etcd: agents' flow records are refused until given)",
    ),
    flow_retention: str = typer.Option(
        "7d", "--flow-retention", help="keep flow records this long (30m, 12h, 7d; 0: forever)"
    ),
    flow_max_mb: int = typer.Option(
        1024, "--flow-max-mb", help="keep at most this many MiB of flow records (0: no limit)"
    ),
) -> None:
    """Run the manager: versioned policy documents, host status and tokens over HTTP(S)."""
    from hyperwall.manager.flow_store import FlowsConfig, Retention
    from hyperwall.manager.server import config, serve

    try:
        age = None if flow_retention.strip() == "0" else retention_seconds(flow_retention)
    except ValueError as exc:
        fail(f"--flow-retention: {exc}")
    if flow_max_mb < 0:
        fail("--flow-max-mb: not negative")
    retention = Retention(max_age=age, max_bytes=flow_max_mb * 1024 * 1024 or None)
    try:
        cfg = config(
            listen,
            store,
            bootstrap_token_file,
            tls_cert,
            tls_key,
            flows=FlowsConfig(flows, retention),
        )
    except ValueError as exc:
        fail(str(exc))
    serve(cfg)
