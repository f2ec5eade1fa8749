"""A throwaway etcd server (Debian's `etcd-server`) on 127.0.0.1 with free ports, for tests,
benchmarks and labs. `stop()` kills it; `start()` on the same base directory brings it back
with the same data (an outage, not a loss)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EtcdProcess:
    base: Path
    port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    extra_args: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.base / "etcd.log"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @classmethod
    def launch(cls, base: Path, extra_args: tuple[str, ...] = ()) -> EtcdProcess:
        server = cls(base, extra_args=extra_args)
        server.start()
        return server

    def start(self) -> None:
        exe = shutil.which("etcd")
        if exe is None:
            raise RuntimeError("no `etcd` binary: run scripts/bootstrap (Debian etcd-server)")
        peer_url = f"http://{self.host}:{self.peer_port}"
        args = [
            exe,
            "--name=hwtest",
            f"--data-dir={self.base / 'data'}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=hwtest={peer_url}",
            "--logger=zap",
            "--log-level=warn",
            *self.extra_args,
        ]
        self.base.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                    if b"true" in response.read():
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"etcd did not become healthy: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None
