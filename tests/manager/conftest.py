"""Manager fixtures: a real uvicorn server on 127.0.0.1 (random port) in a thread, on a
fresh store of each backend (the store tests' fixtures, reused)."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from hyperwall.client import ManagerClient
from hyperwall.io.files import read_documents
from hyperwall.manager.app import create_app
from hyperwall.manager.limits import Limits, guarded_h11
from tests.store import conftest as store_fixtures
from tests.store.conftest import UrlFactory

# the store tests' fixtures, reused: same etcd server fixture, same URL factories
etcd_server = store_fixtures.etcd_server
new_url = store_fixtures.new_url
sqlite_url = store_fixtures.sqlite_url

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example_documents() -> list[dict[str, Any]]:
    docs, issues = read_documents([EXAMPLES])
    assert not issues
    return [doc for doc, _ in docs]


@dataclass
class Live:
    url: str
    admin: str  # a provider-admin token
    token_file: Path

    def client(self, token: str | None = "admin") -> ManagerClient:
        return ManagerClient(self.url, self.admin if token == "admin" else token, timeout=30)


def start_server(
    store_url: str, token_file: Path, admin: str | None = None, limits: Limits = Limits()
) -> Generator[Live, None, None]:
    """Run a manager in a thread until the generator is closed; `admin`: a token of an
    existing store (else the bootstrap token written to `token_file` is used)."""
    app = create_app(store_url, token_file, limits)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        http=guarded_h11(limits.header_timeout),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("manager did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        token = admin or token_file.read_text().strip()
        yield Live(f"http://127.0.0.1:{port}", token, token_file)
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture
def live(new_url: UrlFactory, tmp_path: Path) -> Iterator[Live]:
    """A manager on a fresh store of each backend."""
    yield from start_server(new_url(), tmp_path / "admin.token")


@pytest.fixture
def live_sqlite(sqlite_url: UrlFactory, tmp_path: Path) -> Iterator[Live]:
    yield from start_server(sqlite_url(), tmp_path / "admin.token")
