"""One real manager (uvicorn in a thread, SQLite store) with small request limits, the
example fleet applied, and a token of each role; shared by the hostile-input tests."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from hyperwall.manager.limits import Limits
from tests.manager.conftest import Live, example_documents, start_server
from tests.manager.support import call
from tests.store.conftest import sqlite_urls

LIMITS = Limits(max_body=4 * 1024 * 1024, header_timeout=1.0, body_timeout=2.0)


@dataclass
class Fleet:
    live: Live
    tokens: dict[str, str]  # provider, acme, globex, auditor, agent (hv1)

    @property
    def url(self) -> str:
        return self.live.url

    def call(self, who: str, method: str, path: str, body: Any = None, **params: Any) -> Any:
        """A request as `who`; the body is sent as ASCII JSON (`\\ud800` escaped as a
        hostile client would), so any string can be sent."""
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        if body is None:
            return call(self.url, self.tokens[who], method, path, None, **params)
        headers["Content-Type"] = "application/json"
        content = json.dumps(body).encode()
        return httpx.request(
            method, self.url + path, headers=headers, content=content, params=params, timeout=30
        )

    def revision(self) -> int:
        return int(self.call("provider", "GET", "/v1/history", limit=1).json()[0]["revision"])

    def connect(self) -> socket.socket:
        host, port = self.url.removeprefix("http://").split(":")
        sock = socket.create_connection((host, int(port)), timeout=30)
        return sock


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    base = tmp_path_factory.mktemp("security")
    for live in start_server(sqlite_urls(Path(base))(), base / "admin.token", limits=LIMITS):
        r = call(live.url, live.admin, "POST", "/v1/apply", {"documents": example_documents()})
        assert r.status_code == 200, r.text
        tokens = {"provider": live.admin}
        for name, body in (
            ("acme", {"role": "tenant-admin", "tenant": "acme"}),
            ("globex", {"role": "tenant-admin", "tenant": "globex"}),
            ("auditor", {"role": "auditor"}),
            ("agent", {"role": "agent", "host": "hv1"}),
        ):
            created = call(live.url, live.admin, "POST", "/v1/tokens", body)
            assert created.status_code == 201, created.text
            tokens[name] = created.json()["token"]
        yield Fleet(live, tokens)


def workload(name: str, tenant: str | None, ip: str, mac: str, **labels: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if tenant:
        metadata["tenant"] = tenant
    return {
        "apiVersion": "hyperwall.io/v1",
        "kind": "Workload",
        "metadata": metadata,
        "spec": {"host": "hv1", "interfaces": [{"name": "eth0", "mac": mac, "ips": [ip]}]},
    }


def rss() -> int:
    """This process's resident set in bytes (the manager runs in a thread of it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """The status and the rest of an HTTP/1.1 answer read until the server closes (or
    the head and Content-Length body have arrived)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return 0, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(head.split(b" ")[1]), head + b"\r\n\r\n" + body
