"""Run the manager with uvicorn: listen address, optional TLS (uvicorn's ssl options), and
a prompt, clean stop.

Stopping (`SIGTERM` or `SIGINT`): the listening socket closes, open agent long-polls are
answered 204 at once (`drain.py`), other requests get up to `GRACE` seconds to finish
before uvicorn cancels them, then the store is closed. The process then exits 0 on
`SIGTERM` (the normal way a service manager stops it), not by re-raising the signal.
"""

from __future__ import annotations

import logging
import signal
import socket
from pathlib import Path
from types import FrameType
from typing import NoReturn

import uvicorn
from fastapi import FastAPI

from hyperwall.manager.app import create_app, drain_of
from hyperwall.manager.drain import Drain
from hyperwall.manager.flow_store import FlowsConfig
from hyperwall.manager.limits import Limits, guarded_h11

GRACE = 5  # seconds open requests get to finish on shutdown


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
    limits: Limits = Limits(),
    flows: FlowsConfig | None = None,
) -> uvicorn.Config:
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    if not store_url.startswith(("sqlite:///", "etcd://")):
        raise ValueError(f"{store_url}: expected sqlite:///PATH or etcd://HOST:PORT[/PREFIX]")
    host, port = parse_listen(listen)
    return uvicorn.Config(
        create_app(store_url, bootstrap_token_file, limits, flows),
        host=host,
        port=port,
        http=guarded_h11(limits.header_timeout),
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        log_level="info",
        lifespan="on",
        timeout_graceful_shutdown=GRACE,
    )


class ManagerServer(uvicorn.Server):
    """uvicorn's server that answers open long-polls as soon as shutdown begins."""

    def __init__(self, cfg: uvicorn.Config, drain: Drain) -> None:
        super().__init__(cfg)
        self.drain = drain

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.drain.set()
        await super().shutdown(sockets)


def serve(cfg: uvicorn.Config) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = cfg.app
    assert isinstance(app, FastAPI)
    # uvicorn re-raises the signal it stopped on once it is done; with this handler that
    # SIGTERM ends the process with exit 0 instead of death by signal
    signal.signal(signal.SIGTERM, _exit_cleanly)
    ManagerServer(cfg, drain_of(app)).run()


def _exit_cleanly(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(0)
