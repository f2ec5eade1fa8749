"""Run the manager with uvicorn: listen address, optional TLS (uvicorn's ssl options)."""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn

from hyperwall.manager.app import create_app


def parse_listen(listen: str) -> tuple[str, int]:
    """`127.0.0.1:8443` or `[::1]:8443` -> (host, port); ValueError otherwise."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{listen!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def config(
    listen: str,
    store_url: str,
    bootstrap_token_file: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> uvicorn.Config:
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    if not store_url.startswith(("sqlite:///", "etcd://")):
        raise ValueError(f"{store_url}: expected sqlite:///PATH or etcd://HOST:PORT[/PREFIX]")
    host, port = parse_listen(listen)
    return uvicorn.Config(
        create_app(store_url, bootstrap_token_file),
        host=host,
        port=port,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        log_level="info",
        lifespan="on",
    )


def serve(cfg: uvicorn.Config) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    uvicorn.Server(cfg).run()
