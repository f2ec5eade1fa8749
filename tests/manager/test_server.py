"""`hyperwall manager` wiring: listen parsing, TLS through uvicorn's ssl options."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
import uvicorn

from hyperwall.client import ManagerClient, Unreachable
from hyperwall.manager.server import config, parse_listen


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8470") == ("127.0.0.1", 8470)
    assert parse_listen("[::1]:1") == ("::1", 1)
    for bad in ("127.0.0.1", ":80", "h:x", "h:70000"):
        with pytest.raises(ValueError):
            parse_listen(bad)
    with pytest.raises(ValueError):
        config("127.0.0.1:0", "sqlite:///x.db", tls_cert=Path("c.pem"))
    with pytest.raises(ValueError):
        config("127.0.0.1:0", "postgres://x")


def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    token_file = tmp_path / "admin.token"
    cfg = config("127.0.0.1:0", f"sqlite:///{tmp_path}/s.db", token_file, cert, key)
    cfg.log_level = "warning"
    server = uvicorn.Server(cfg)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        token = token_file.read_text().strip()
        with ManagerClient(f"https://127.0.0.1:{port}", token, verify=str(cert)) as client:
            assert client.history() == []
        with (
            ManagerClient(f"https://127.0.0.1:{port}", token) as client,
            pytest.raises(Unreachable),
        ):
            client.history()  # self-signed: not trusted by default
    finally:
        server.should_exit = True
        thread.join(15)
