"""A throwaway etcd server (Debian's `etcd-server`) on 127.0.0.1 with free ports, for tests,
benchmarks and labs.

`start(base)` runs it in the test's own network namespace, `start(base, netns=NS)` inside
namespace NS (its loopback must be up); `kill()` stops it abruptly and `restart()` runs it
again on the same ports and data directory, as an etcd coming back after an outage.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from hyperwall.dataplane.netns import inside

START_TIMEOUT = 30.0


def _in(netns: str | None) -> contextlib.AbstractContextManager[None]:
    return inside(netns) if netns is not None else contextlib.nullcontext()


def free_port(netns: str | None = None) -> int:
    with _in(netns), socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EtcdProcess:
    host: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    argv: list[str]
    netns: str | None = None

    @classmethod
    def start(
        cls, base: Path, netns: str | None = None, extra_args: tuple[str, ...] = ()
    ) -> EtcdProcess:
        exe = shutil.which("etcd")
        if exe is None:
            raise RuntimeError("no `etcd` binary: run scripts/bootstrap (Debian etcd-server)")
        client, peer = free_port(netns), free_port(netns)
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        args = [
            exe,
            "--name=hwtest",
            f"--data-dir={base / 'data'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=hwtest={peer_url}",
            "--logger=zap",
            "--log-level=warn",
            *extra_args,
        ]
        if netns is not None:
            args = ["ip", "netns", "exec", netns, *args]
        base.mkdir(parents=True, exist_ok=True)
        log = base / "etcd.log"
        server = cls("127.0.0.1", client, cls._spawn(args, log), log, args, netns)
        server._wait_healthy()
        return server

    @staticmethod
    def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

    def _wait_healthy(self) -> None:
        url = f"http://{self.host}:{self.port}/health"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited: {self.log.read_text()[-2000:]}")
            try:
                with _in(self.netns), urllib.request.urlopen(url, timeout=1) as response:
                    if b"true" in response.read():
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"etcd did not become healthy: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL, and wait until it is gone (its ports are free then)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)

    def restart(self) -> None:
        """Run again on the same ports and data directory; wait until it is healthy."""
        self.kill()
        self.proc = self._spawn(self.argv, self.log)
        self._wait_healthy()

    def stop(self) -> None:
        self.kill()
