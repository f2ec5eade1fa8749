"""The agent's manager source against a real HTTP peer on loopback.

`ManagerSource` alone: first sync, new revisions, invalid documents keep the last valid,
restart from the cache while the manager is down, resync after reconnecting. Then the real
agent process (`hyperwall agent --server`) in a throwaway namespace: it enforces what the
manager serves, reports status and inventory, keeps enforcing with the manager down and
after its own restart, and follows the manager again once it is back.

The peer (`Peer`) is a small stdlib HTTP server implementing the manager's three agent
endpoints from an in-memory revision list; it stands in for `hyperwall manager` until that
service has its HTTP side. Every wait below is for an event (with a generous deadline that
only turns a hang into a failure); nothing asserts on durations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hyperwall.agent.manager_source import (
    CACHE_FILE,
    Client,
    ManagerSource,
    NotSynced,
    Reporter,
    StatusReport,
    host_workloads,
    revision_of,
)
from hyperwall.agent.status import AgentStatus, read_status
from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.serialize import program_hash
from hyperwall.dataplane.netns import inside
from hyperwall.io.files import read_documents
from hyperwall.policy.catalog import build_catalog
from hyperwall.policy.errors import DocumentsInvalid, Source
from hyperwall.store import open_store
from hyperwall.store.ops import replace_all

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOKEN = "agent-token-hv1"
DEADLINE = 30.0


def example_documents() -> list[dict[str, Any]]:
    docs, issues = read_documents([EXAMPLES])
    assert not issues
    return [json.loads(json.dumps(raw)) for raw, _ in docs]


def relabel(docs: list[dict[str, Any]], name: str, role: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(json.dumps(docs))
    for doc in out:
        if doc["kind"] == "Workload" and doc["metadata"]["name"] == name:
            doc["metadata"]["labels"]["role"] = role
    return out


BROKEN = {"apiVersion": "hyperwall.io/v1", "kind": "Nonsense", "metadata": {"name": "x"}}


def keys(docs: list[dict[str, Any]]) -> set[tuple[str, str | None, str]]:
    return {(d["kind"], d["metadata"].get("tenant"), d["metadata"]["name"]) for d in docs}


def expected_hash(docs: list[dict[str, Any]], host: str = "hv1") -> str:
    catalog = build_catalog((d, Source("test", i)) for i, d in enumerate(docs))
    compiler = FleetCompiler(catalog.config, catalog.workloads.values())
    return program_hash(compiler.host_program(host))


def wait_for(check: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
    """Poll `check` until it returns something truthy; fail (not hang) after `deadline`."""
    end = time.monotonic() + deadline
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Peer:
    """The manager's agent endpoints over an in-memory list of revisions (1-based)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self.revisions: list[list[dict[str, Any]]] = []
        self.statuses: list[dict[str, Any]] = []
        self.inventories: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.port = 0
        self.server: ThreadingHTTPServer | None = None
        self.stopping = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def commit(self, documents: list[dict[str, Any]]) -> int:
        with self.cond:
            self.revisions.append(documents)
            self.cond.notify_all()
            return len(self.revisions)

    token = TOKEN

    def commit_invalid(self, documents: list[dict[str, Any]]) -> int:
        return self.commit(documents)

    def replace(self, documents: list[dict[str, Any]]) -> int:
        return self.commit(documents)

    def status(self) -> dict[str, Any] | None:
        with self.cond:
            return self.statuses[-1] if self.statuses else None

    def inventory(self) -> list[dict[str, Any]] | None:
        with self.cond:
            return self.inventories[-1]["workloads"] if self.inventories else None

    def start(self) -> None:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, code: int, body: Any = None) -> None:
                with contextlib.suppress(OSError):  # the client may be gone (stopped)
                    self._send(code, body)

            def _send(self, code: int, body: Any) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                if data:
                    self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(data)

            def _route(self) -> tuple[str, dict[str, str]] | None:
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._reply(401, {"error": "unauthorized"})
                    return None
                url = urllib.parse.urlsplit(self.path)
                prefix = "/v1/agent/hv1/"
                if not url.path.startswith(prefix):
                    self._reply(404, {"error": "not found"})
                    return None
                query = dict(urllib.parse.parse_qsl(url.query))
                return url.path.removeprefix(prefix), query

            def do_GET(self) -> None:
                route = self._route()
                if route is None:
                    return
                what, query = route
                if what != "desired":
                    self._reply(404, {"error": "not found"})
                    return
                after, wait = int(query["after"]), float(query["wait"])
                with peer.cond:
                    peer.cond.wait_for(
                        lambda: len(peer.revisions) > after or peer.stopping, timeout=wait
                    )
                    current = len(peer.revisions)
                    docs = peer.revisions[-1] if current else []
                if current > after and not peer.stopping:
                    self._reply(200, {"revision": current, "documents": docs})
                else:
                    self._reply(204)

            def do_PUT(self) -> None:
                route = self._route()
                if route is None:
                    return
                what, _ = route
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with peer.cond:
                    if what == "status":
                        peer.statuses.append(body)
                    elif what == "inventory":
                        peer.inventories.append(body)
                    else:
                        self._reply(404, {"error": "not found"})
                        return
                self._reply(204)

        self.stopping = False
        if self.netns is None:
            self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        else:
            with inside(self.netns):  # the listening socket lives in the namespace
                self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is None:
            return
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()
        self.server = None


class RealManager:
    """`hyperwall manager` as a subprocess (in `netns` if given) on a SQLite store, with an
    agent token for hv1; the same test interface as `Peer`. An invalid revision (which the
    manager itself refuses to commit) is written to the store file directly: the manager
    follows commits by other processes on the file."""

    def __init__(self, tmp: Path, netns: str | None = None, listen: str = "127.0.0.1") -> None:
        self.tmp, self.netns, self.listen = tmp, netns, listen
        self.store_url = f"sqlite:///{tmp / 'manager.db'}"
        self.port = free_port(netns)
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin = ""
        self.token = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _http(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.admin}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with _in(self.netns), urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def _healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, (
            self.tmp / "manager.log"
        ).read_text()
        try:
            self._http("GET", "/v1/healthz")
        except OSError:
            return False
        return True

    def start(self) -> None:
        argv = [
            *hyperwall(),
            "manager",
            "--listen",
            f"{self.listen}:{self.port}",
            "--store",
            self.store_url,
            "--bootstrap-token-file",
            str(self.tmp / "admin-token"),
        ]
        if self.netns is not None:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        with open(self.tmp / "manager.log", "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log)
        wait_for(self._healthy, "the manager to answer")
        if not self.admin:
            self.admin = (self.tmp / "admin-token").read_text().strip()
            self.token = self.agent_token("hv1")

    def agent_token(self, host: str) -> str:
        created = self._http("POST", "/v1/tokens", {"role": "agent", "host": host})
        token: str = created["token"]
        return token

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def commit(self, documents: list[dict[str, Any]]) -> int:
        if self.proc is None:  # down: straight to the store, as another manager would
            return self.commit_invalid(documents)
        result = self._http("POST", "/v1/apply", {"documents": documents, "message": "test"})
        revision: int = result["revision"]
        return revision

    def commit_invalid(self, documents: list[dict[str, Any]]) -> int:
        """Make `documents` the whole set, bypassing the manager's validation."""

        async def go() -> int:
            store = await open_store(self.store_url)
            try:
                info = await replace_all(store, documents, "test", "bypassing validation")
                assert info is not None
                return info.number
            finally:
                await store.close()

        return asyncio.run(go())

    def replace(self, documents: list[dict[str, Any]]) -> int:
        return self.commit_invalid(documents)

    def status(self, host: str = "hv1") -> dict[str, Any] | None:
        hosts = self._http("GET", "/v1/status")["hosts"]
        found = [h for h in hosts if h["host"] == host and h["reported"] is not None]
        return found[0] if found else None

    def inventory(self) -> list[dict[str, Any]] | None:
        async def go() -> list[dict[str, Any]] | None:
            store = await open_store(self.store_url)
            try:
                return (await store.inventory()).get("hv1")
            finally:
                await store.close()

        return asyncio.run(go())


Server = Peer | RealManager


def make_server(kind: str, tmp: Path, netns: str | None = None) -> Server:
    return Peer(netns) if kind == "peer" else RealManager(tmp, netns)


SERVERS = pytest.mark.parametrize("kind", ["peer", "manager"])


@pytest.fixture
def server(kind: str, tmp_path: Path) -> Iterator[Server]:
    (tmp_path / "srv").mkdir()
    p = make_server(kind, tmp_path / "srv")
    p.start()
    try:
        yield p
    finally:
        p.stop()


def _in(netns: str | None) -> contextlib.AbstractContextManager[None]:
    return inside(netns) if netns is not None else contextlib.nullcontext()


def free_port(netns: str | None) -> int:
    with _in(netns), socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Changes:
    """Counts `on_change` calls (the agent's `queue.add("policy")`)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def source_for(server: Server, cache: Path) -> ManagerSource:
    return ManagerSource(server.url, server.token, "hv1", cache, wait_seconds=1.0, max_backoff=0.5)


def digest_revision(source: ManagerSource) -> int | None:
    try:
        return revision_of(source.load()[1])
    except (DocumentsInvalid, OSError):
        return None


# -- the source alone ---------------------------------------------------------------------


@SERVERS
def test_first_sync_and_new_revision(server: Server, tmp_path: Path) -> None:
    docs = example_documents()
    first = server.commit(docs)
    source = source_for(server, tmp_path)
    with pytest.raises(NotSynced):
        source.load()  # nothing yet: no cache, not started
    changes = Changes()
    source.start(changes)
    try:
        wait_for(lambda: changes.count >= 1, "the first sync")
        catalog, digest = source.load()
        assert revision_of(digest) == first
        assert "acme/web-1" in catalog.workloads
        cached = json.loads((tmp_path / CACHE_FILE).read_text())
        assert cached["revision"] == first
        assert keys(cached["documents"]) == keys(docs)  # (the manager may normalize them)

        second = server.commit(relabel(docs, "web-1", "app"))
        wait_for(lambda: digest_revision(source) == second, "the next revision")
        catalog, _ = source.load()
        assert catalog.workloads["acme/web-1"].labels["role"] == "app"
        assert json.loads((tmp_path / CACHE_FILE).read_text())["revision"] == second
        wait_for(lambda: changes.count >= 2, "the agent told about it")
    finally:
        source.stop(timeout=5)


@SERVERS
def test_invalid_documents_keep_the_last_valid(server: Server, tmp_path: Path) -> None:
    docs = example_documents()
    first = server.commit(docs)
    source = source_for(server, tmp_path)
    source.start(Changes())
    try:
        wait_for(lambda: digest_revision(source) == first, "the first revision")
        bad = server.commit_invalid([*docs, BROKEN])
        wait_for(lambda: source.revision == bad, "the invalid revision")
        with pytest.raises(DocumentsInvalid, match="Nonsense"):
            source.load()  # the reconciler keeps the first revision's program, reports this
        assert source.current is not None and source.current.revision == first
        assert json.loads((tmp_path / CACHE_FILE).read_text())["revision"] == first

        fixed = server.replace(relabel(docs, "web-1", "app"))
        wait_for(lambda: digest_revision(source) == fixed, "the valid revision after it")
    finally:
        source.stop(timeout=5)


@SERVERS
def test_a_fresh_source_gets_the_last_valid_once_then_the_error(
    server: Server, tmp_path: Path
) -> None:
    """After a restart the reconciler has no program: it gets the cached valid documents
    first (enforce them), then the error of the newer invalid revision."""
    docs = example_documents()
    good = server.commit(docs)
    first = source_for(server, tmp_path)
    first.start(Changes())
    wait_for(lambda: digest_revision(first) == good, "the first revision")
    first.stop(timeout=5)
    bad = server.commit_invalid([*docs, BROKEN])
    source = source_for(server, tmp_path)
    changes = Changes()
    source.start(changes)
    try:
        wait_for(lambda: source.revision == bad, "the invalid revision")
        assert revision_of(source.load()[1]) == good
        with pytest.raises(DocumentsInvalid):
            source.load()
        assert changes.count >= 1  # asked for another reconcile to report the error
    finally:
        source.stop(timeout=5)


@SERVERS
def test_manager_down_restart_from_cache_then_reconnect(server: Server, tmp_path: Path) -> None:
    docs = example_documents()
    server.commit(docs)
    second = server.commit(relabel(docs, "web-1", "app"))
    source = source_for(server, tmp_path)
    source.start(Changes())
    wait_for(lambda: digest_revision(source) == second, "the second revision")
    server.stop()  # the manager goes away
    source.stop(timeout=5)

    restarted = source_for(server, tmp_path)  # agent restart, manager unreachable
    changes = Changes()
    restarted.start(changes)
    try:
        catalog, digest = restarted.load()  # from the cache, before any answer
        assert revision_of(digest) == second
        assert catalog.workloads["acme/web-1"].labels["role"] == "app"
        assert not restarted.synced.is_set()

        third = server.commit(relabel(docs, "web-1", "db"))  # committed while it was down
        server.start()  # back on the same port: the source lists again and resyncs
        wait_for(lambda: digest_revision(restarted) == third, "the resync")
        wait_for(lambda: changes.count >= 1, "the agent told about it")
        assert restarted.synced.is_set()
    finally:
        restarted.stop(timeout=5)


def test_accept_and_load_without_a_server(tmp_path: Path) -> None:
    """The state machine alone: valid, invalid (served once, then raised), back to valid."""
    docs = example_documents()
    source = ManagerSource("http://127.0.0.1:9", TOKEN, "hv1", tmp_path)
    changes = Changes()
    source.on_change = changes
    assert source.accept(1, docs)
    assert not source.accept(1, docs)  # the same revision again: nothing new
    assert revision_of(source.load()[1]) == 1
    assert source.accept(2, [*docs, BROKEN])
    assert not source.accept(2, [*docs, BROKEN])
    with pytest.raises(DocumentsInvalid):
        source.load()
    assert source.revision == 2 and changes.count == 0
    assert source.accept(1, docs)  # back to revision 1 (a reset store): the error clears
    assert revision_of(source.load()[1]) == 1
    assert source.accept(3, "not a list") and source.revision == 3
    with pytest.raises(DocumentsInvalid, match="list of objects"):
        source.load()
    restarted = ManagerSource("http://127.0.0.1:9", TOKEN, "hv1", tmp_path)
    assert revision_of(restarted.load()[1]) == 1  # the cache holds the last valid only
    other = ManagerSource("http://127.0.0.1:9", TOKEN, "hv2", tmp_path)
    with pytest.raises(NotSynced):
        other.load()  # another host's cache is not used


def test_corrupt_cache_is_ignored(tmp_path: Path) -> None:
    (tmp_path / CACHE_FILE).write_text("{not json")
    source = ManagerSource("http://127.0.0.1:9", TOKEN, "hv1", tmp_path)
    with pytest.raises(NotSynced):
        source.load()


@SERVERS
def test_wrong_token_is_retried_not_fatal(server: Server, tmp_path: Path) -> None:
    server.commit(example_documents())
    source = ManagerSource(server.url, "wrong", "hv1", tmp_path, wait_seconds=1.0, max_backoff=0.2)
    source.start(Changes())
    try:
        wait_for(lambda: source._last_error, "a refusal")
        with pytest.raises(NotSynced, match="401"):
            source.load()
    finally:
        source.stop(timeout=5)


def test_reporter_sends_the_latest_and_heartbeats(tmp_path: Path) -> None:
    peer = Peer()
    peer.start()
    reporter = Reporter(Client(peer.url, TOKEN, "hv1"), max_backoff=0.2, heartbeat=0.1)
    reporter.start()
    try:
        reporter.inventory([{"kind": "Workload"}])
        reporter.status(StatusReport(3, "abc", True, None, 7))
        wait_for(lambda: len(peer.statuses) >= 3, "heartbeats")
        assert peer.statuses[-1] == {
            "revision": 3,
            "programHash": "abc",
            "converged": True,
            "error": None,
            "endpoints": 7,
        }
        assert peer.inventories == [{"workloads": [{"kind": "Workload"}]}]
    finally:
        reporter.stop(timeout=5)
        peer.stop()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ([], {}, "exactly one of --policy-dir and --server"),
        (["--policy-dir", "x", "--server", "http://h:1"], {}, "exactly one of"),
        (["--policy-dir", "x"], {"HYPERWALL_SERVER": "http://h:1"}, "exactly one of"),
        (["--server", "http://h:1"], {}, "needs --token-file"),
        ([], {"HYPERWALL_SERVER": "ftp://h"}, "bad --server"),
        (["--server", "http://h:1", "--token-file", "/nonexistent"], {}, "cannot read"),
    ],
)
def test_cli_needs_one_source(
    args: list[str], env: dict[str, str], message: str, tmp_path: Path
) -> None:
    environ = {
        k: v for k, v in os.environ.items() if k not in ("HYPERWALL_SERVER", "HYPERWALL_TOKEN")
    }
    if "HYPERWALL_SERVER" in env:
        environ["HYPERWALL_TOKEN"] = "t"
    done = subprocess.run(
        [*hyperwall(), "agent", "--host", "hv1", "--state-dir", str(tmp_path), *args],
        capture_output=True,
        text=True,
        env={**environ, **env},
    )
    assert done.returncode == 2
    assert message in " ".join(done.stderr.split())


def test_host_workloads_are_the_inventory() -> None:
    docs = tuple(example_documents())
    mine = host_workloads(docs, "hv1")
    assert mine and all(d["kind"] == "Workload" and d["spec"]["host"] == "hv1" for d in mine)
    assert len(mine) + len(host_workloads(docs, "hv2")) == sum(
        d["kind"] == "Workload" for d in docs
    )


# -- the agent process in a namespace ------------------------------------------------------


def hyperwall() -> list[str]:
    script = Path(sys.executable).parent / "hyperwall"
    return [str(script)] if script.exists() else [sys.executable, "-m", "hyperwall"]


class AgentProcess:
    def __init__(
        self,
        netns: str,
        server: Server,
        tmp: Path,
        host: str = "hv1",
        url: str | None = None,
        token: str | None = None,
    ) -> None:
        self.netns, self.server, self.tmp, self.host = netns, server, tmp, host
        self.url, self.token = url, token
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def status_path(self) -> Path:
        return self.tmp / "state" / "status.json"

    def start(self) -> None:
        self.status_path.unlink(missing_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        (self.tmp / "token").write_text((self.token or self.server.token) + "\n")
        argv = [
            *hyperwall(),
            "agent",
            "--host",
            self.host,
            "--server",
            self.url or self.server.url,
            "--token-file",
            str(self.tmp / "token"),
            "--state-dir",
            str(self.tmp / "state"),
            "--cache-dir",
            str(self.tmp / "cache"),
            "--watch-wait",
            "2",
        ]
        log = open(self.tmp / "agent.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, *argv], stdout=log, stderr=log
        )
        log.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def status(self) -> AgentStatus | None:
        assert self.proc is not None and self.proc.poll() is None, (
            self.tmp / "agent.log"
        ).read_text()
        return read_status(self.status_path)

    def wait_program(self, digest: str, converged: bool = True) -> AgentStatus:
        def ready() -> AgentStatus | None:
            s = self.status()
            ok = s is not None and s.program_hash == digest and s.converged == converged
            return s if ok else None

        result: AgentStatus = wait_for(ready, f"the agent to run program {digest}")
        return result


def table(netns: str) -> str:
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "list", "ruleset"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


@SERVERS
def test_agent_follows_the_manager_and_survives_its_absence(
    kind: str, netns: str, tmp_path: Path
) -> None:
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    (tmp_path / "srv").mkdir()
    server = make_server(kind, tmp_path / "srv", netns)
    agent = AgentProcess(netns, server, tmp_path)
    docs = example_documents()
    v2 = relabel(docs, "web-1", "app")
    v4 = relabel(docs, "web-1", "db")

    def reported(revision: int, converged: bool = True) -> dict[str, Any] | None:
        s = server.status()
        ok = s is not None and s["revision"] == revision and s["converged"] == converged
        return s if ok else None

    try:
        server.start()
        first = server.commit(docs)
        agent.start()
        agent.wait_program(expected_hash(docs))
        report = wait_for(lambda: reported(first), "a converged status report")
        assert report["programHash"] == expected_hash(docs) and report["error"] is None
        assert report["endpoints"] > 0
        inventory = wait_for(server.inventory, "the inventory")
        names = {w["metadata"]["name"] for w in inventory}
        assert names == {d["metadata"]["name"] for d in host_workloads(tuple(docs), "hv1")}

        second = server.commit(v2)  # a label change: applied incrementally
        status = agent.wait_program(expected_hash(v2))
        assert status.mode in ("incremental", "noop")  # noop: a later reconcile
        wait_for(lambda: reported(second), "the report of the label change")

        server.commit_invalid([*v2, BROKEN])  # invalid: the last valid program stays
        status = agent.wait_program(expected_hash(v2), converged=False)
        assert status.error and "Nonsense" in status.error
        report = wait_for(lambda: reported(second, converged=False), "the error reported")
        assert "Nonsense" in report["error"]

        server.stop()  # the manager goes away: enforcement goes on
        before = table(netns)
        agent.stop()  # and the agent restarts without it: from the cache (the label change)
        assert table(netns) == before
        agent.start()
        status = agent.wait_program(expected_hash(v2))
        assert status.mode in ("noop", "sync")
        assert table(netns) == before

        fourth = server.replace(v4)  # committed while down; the agent resyncs once it is back
        server.start()
        agent.wait_program(expected_hash(v4))
        wait_for(lambda: reported(fourth), "the report after the reconnect")
    finally:
        agent.stop()
        server.stop()
