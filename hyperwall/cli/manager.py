"""`hyperwall manager`: run the control plane's HTTP API."""

from __future__ import annotations

from pathlib import Path

import typer

from hyperwall.cli.common import fail


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
) -> None:
    """Run the manager: versioned policy documents, host status and tokens over HTTP(S)."""
    from hyperwall.manager.server import config, serve

    try:
        cfg = config(listen, store, bootstrap_token_file, tls_cert, tls_key)
    except ValueError as exc:
        fail(str(exc))
    serve(cfg)
