"""`hyperwall manager` wiring: listen parsing, TLS through uvicorn's ssl options."""

from __future__ import annotations

import http.client
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import uvicorn

from hyperwall.client import ManagerClient, Unreachable
from hyperwall.manager.server import config, parse_listen
from tests.agent.test_manager_source import RealManager, wait_for


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


def _unread_bytes(server_port: int, client_port: int) -> int | None:
    """Bytes the server has not yet read on its end of this loopback connection (from
    /proc/net/tcp); None while the connection is not listed."""
    local = f"0100007F:{server_port:04X}"
    remote = f"0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            return int(fields[4].split(":")[1], 16)
    return None


def test_sigterm_stops_promptly_with_a_long_poll_open(tmp_path: Path) -> None:
    """`hyperwall manager` with an agent's 60 s long-poll open: SIGTERM answers the poll
    (204, nothing newer) and the process exits 0, long before the poll would have ended."""
    manager = RealManager(tmp_path)
    try:
        manager.start()
        token = manager.agent_token("hv1")
        current = manager._http("GET", "/v1/healthz")["revision"]
        conn = http.client.HTTPConnection("127.0.0.1", manager.port, timeout=30)
        conn.request(
            "GET",
            f"/v1/agent/hv1/desired?after={current}&wait=60",
            headers={"Authorization": f"Bearer {token}"},
        )
        client_port = conn.sock.getsockname()[1]
        # the server has read the request (so its handler runs) before the signal
        wait_for(lambda: _unread_bytes(manager.port, client_port) == 0, "the poll to be read")
        assert manager.proc is not None
        manager.proc.send_signal(signal.SIGTERM)
        assert manager.proc.wait(15) == 0, (tmp_path / "manager.log").read_text()
        response = conn.getresponse()
        assert response.status == 204
        conn.close()
    finally:
        manager.stop()
