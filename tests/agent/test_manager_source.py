"""The agent's manager source against the real manager (`hyperwall manager`) on loopback.

`ManagerSource` alone: first sync (the host's compiled program), new revisions as deltas,
a stored revision that does not validate changes nothing, restart from the cache while the
manager is down, resync after reconnecting; answers that do not decode or verify are
refused. Then the real agent process (`hyperwall agent --server`) in a throwaway namespace:
it enforces what the manager serves, reports status and inventory, keeps enforcing with the
manager down and after its own restart, and follows the manager again once it is back.
Every wait below is for an event (with a generous deadline that only turns a hang into a
failure); nothing asserts on durations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hyperwall.agent.manager_source import (
    Client,
    ManagerError,
    ManagerSource,
    NotSynced,
    Reporter,
    StatusReport,
    host_inventory,
    revision_of,
)
from hyperwall.agent.program_cache import DELTAS_FILE, PROGRAM_FILE
from hyperwall.agent.status import AgentStatus, read_status
from hyperwall.compiler.delta import diff
from hyperwall.compiler.digest import digest_text, program_digest
from hyperwall.compiler.fleet import FleetCompiler
from hyperwall.compiler.program import HostProgram
from hyperwall.compiler.program_codec import delta_to_wire, program_to_wire
from hyperwall.compiler.serialize import program_hash
from hyperwall.dataplane.netns import inside
from hyperwall.io.files import read_documents
from hyperwall.policy.catalog import build_catalog
from hyperwall.policy.errors import Source
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


def program_of(docs: list[dict[str, Any]], host: str = "hv1") -> HostProgram:
    catalog = build_catalog((d, Source("test", i)) for i, d in enumerate(docs))
    return FleetCompiler(catalog.config, catalog.workloads.values()).host_program(host)


def expected_hash(docs: list[dict[str, Any]], host: str = "hv1") -> str:
    return program_hash(program_of(docs, host))


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


class RealManager:
    """`hyperwall manager` as a subprocess (in `netns` if given) on a SQLite store, with an
    agent token for hv1. An invalid revision (which the manager itself refuses to commit)
    is written to the store file directly: the manager follows commits by other processes
    on the file."""

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


Server = RealManager


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    (tmp_path / "srv").mkdir()
    p = RealManager(tmp_path / "srv")
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
    except OSError:
        return None


def held_program(source: ManagerSource) -> HostProgram:
    return source.load()[0]


# -- the source alone ---------------------------------------------------------------------


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
        program, digest = source.load()
        assert revision_of(digest) == first
        assert program == program_of(docs)  # the host's slice, compiled by the manager
        cached = json.loads((tmp_path / PROGRAM_FILE).read_text())
        assert cached["revision"] == first and cached["host"] == "hv1"
        assert cached["digest"] == expected_hash(docs)

        v2 = relabel(docs, "web-1", "app")
        second = server.commit(v2)
        wait_for(lambda: digest_revision(source) == second, "the next revision")
        assert held_program(source) == program_of(v2)
        assert (tmp_path / DELTAS_FILE).read_text().count("\n") == 1  # one delta appended
        wait_for(lambda: changes.count >= 2, "the agent told about it")
        restarted = ManagerSource("http://127.0.0.1:9", TOKEN, "hv1", tmp_path)
        assert held_program(restarted) == program_of(v2)  # program + delta log replayed
    finally:
        source.stop(timeout=5)


def test_a_stored_revision_that_does_not_validate_changes_nothing(
    server: Server, tmp_path: Path
) -> None:
    docs = example_documents()
    first = server.commit(docs)
    source = source_for(server, tmp_path)
    source.start(Changes())
    try:
        wait_for(lambda: digest_revision(source) == first, "the first revision")
        server.commit_invalid([*docs, BROKEN])  # by another writer; the manager skips it
        v3 = relabel(docs, "web-1", "app")
        fixed = server.replace(v3)
        wait_for(lambda: digest_revision(source) == fixed, "the valid revision after it")
        assert held_program(source) == program_of(v3)
    finally:
        source.stop(timeout=5)


def test_manager_down_restart_from_cache_then_reconnect(server: Server, tmp_path: Path) -> None:
    docs = example_documents()
    server.commit(docs)
    v2 = relabel(docs, "web-1", "app")
    second = server.commit(v2)
    source = source_for(server, tmp_path)
    source.start(Changes())
    wait_for(lambda: digest_revision(source) == second, "the second revision")
    server.stop()  # the manager goes away
    source.stop(timeout=5)

    restarted = source_for(server, tmp_path)  # agent restart, manager unreachable
    changes = Changes()
    restarted.start(changes)
    try:
        program, digest = restarted.load()  # from the cache, before any answer
        assert revision_of(digest) == second and program == program_of(v2)
        assert not restarted.synced.is_set()

        v3 = relabel(docs, "web-1", "db")
        third = server.commit(v3)  # committed while it was down
        server.start()  # back on the same port: the source lists again and resyncs
        wait_for(lambda: digest_revision(restarted) == third, "the resync")
        wait_for(lambda: changes.count >= 1, "the agent told about it")
        assert restarted.synced.is_set() and held_program(restarted) == program_of(v3)
    finally:
        restarted.stop(timeout=5)


def answer_whole(revision: int, program: HostProgram) -> dict[str, Any]:
    digest = digest_text(program_digest(program))
    return {"revision": revision, "digest": digest, "program": program_to_wire(program)}


def answer_delta(revision: int, old: HostProgram, new: HostProgram) -> dict[str, Any]:
    return {
        "revision": revision,
        "digest": digest_text(program_digest(new)),
        "base": digest_text(program_digest(old)),
        "delta": delta_to_wire(diff(old, new)),
    }


def test_accept_checks_every_answer(tmp_path: Path) -> None:
    """The state machine alone: whole programs, deltas, and what it refuses."""
    docs = example_documents()
    p1, p2 = program_of(docs), program_of(relabel(docs, "web-1", "app"))
    source = ManagerSource("http://127.0.0.1:9", TOKEN, "hv1", tmp_path)
    assert source.accept(answer_whole(1, p1))
    assert not source.accept(answer_whole(1, p1))  # the same again: nothing new
    assert source.accept(answer_delta(2, p1, p1))  # a new revision, the same program
    assert revision_of(source.load()[1]) == 2
    assert source.accept(answer_delta(3, p1, p2))
    assert held_program(source) == p2
    with pytest.raises(ManagerError, match="does not hold"):
        source.accept(answer_delta(4, p1, p2))  # a delta from a program it does not hold
    forged = {**answer_delta(4, p2, p1), "digest": "0" * 32}
    with pytest.raises(ManagerError, match="digest"):
        source.accept(forged)
    with pytest.raises(ManagerError, match="bad program"):
        source.accept({"revision": 4, "digest": "x", "program": {"host": "hv1"}})
    with pytest.raises(ManagerError, match="host"):
        source.accept(answer_whole(4, program_of(docs, "hv2")))
    assert held_program(source) == p2 and source.revision == 3  # refusals changed nothing
    restarted = ManagerSource("http://127.0.0.1:9", TOKEN, "hv1", tmp_path)
    assert held_program(restarted) == p2 and restarted.revision == 3
    other = ManagerSource("http://127.0.0.1:9", TOKEN, "hv2", tmp_path)
    with pytest.raises(NotSynced):
        other.load()  # another host's cache is not used


def test_torn_delta_log_keeps_what_verified(tmp_path: Path) -> None:
    docs = example_documents()
    p1, p2 = program_of(docs), program_of(relabel(docs, "web-1", "app"))
    p3 = program_of(relabel(docs, "web-1", "db"))
    source = ManagerSource("http://127.0.0.1:9", TOKEN, "hv1", tmp_path)
    assert source.accept(answer_whole(1, p1))
    assert source.accept(answer_delta(2, p1, p2))
    assert source.accept(answer_delta(3, p2, p3))
    log = tmp_path / DELTAS_FILE
    lines = log.read_text().splitlines()
    log.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # a crash mid-write
    restarted = ManagerSource("http://127.0.0.1:9", TOKEN, "hv1", tmp_path)
    assert held_program(restarted) == p2 and restarted.revision == 2
    assert restarted.accept(answer_delta(3, p2, p3))  # rewrites the whole cache
    assert held_program(ManagerSource("http://127.0.0.1:9", TOKEN, "hv1", tmp_path)) == p3


def test_corrupt_cache_is_ignored(tmp_path: Path) -> None:
    (tmp_path / PROGRAM_FILE).write_text("{not json")
    source = ManagerSource("http://127.0.0.1:9", TOKEN, "hv1", tmp_path)
    with pytest.raises(NotSynced):
        source.load()


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


def test_reporter_sends_the_latest_and_heartbeats(server: Server) -> None:
    server.commit(example_documents())
    reporter = Reporter(Client(server.url, server.token, "hv1"), max_backoff=0.2, heartbeat=0.1)
    reporter.start()
    try:
        reporter.inventory([{"workload": "acme/web-1"}])
        reporter.status(StatusReport(1, "abc", True, None, 7))
        wait_for(lambda: reporter.sent >= 3, "heartbeats")
        status = server.status()
        assert status is not None
        assert {k: status[k] for k in ("revision", "programHash", "converged", "error")} == {
            "revision": 1,
            "programHash": "abc",
            "converged": True,
            "error": None,
        }
        assert status["endpoints"] == 7
        assert server.inventory() == [{"workload": "acme/web-1"}]
    finally:
        reporter.stop(timeout=5)


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


def test_inventory_is_the_hosts_endpoints() -> None:
    program = program_of(example_documents())
    inventory = host_inventory(program)
    assert {w["workload"] for w in inventory} == {e.workload for e in program.endpoints.values()}
    assert all(w["mac"] and w["interface"] for w in inventory)


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
        self.extra: list[str] = []  # more `hyperwall agent` options

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
            *self.extra,
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


@pytest.mark.slow  # kernel: the `netns` fixture marks it
def test_agent_follows_the_manager_and_survives_its_absence(netns: str, tmp_path: Path) -> None:
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    (tmp_path / "srv").mkdir()
    server = RealManager(tmp_path / "srv", netns)
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
        assert inventory == host_inventory(program_of(docs))

        second = server.commit(v2)  # a label change: applied incrementally
        status = agent.wait_program(expected_hash(v2))
        assert status.mode in ("incremental", "noop")  # noop: a later reconcile
        wait_for(lambda: reported(second), "the report of the label change")

        server.commit_invalid([*v2, BROKEN])  # invalid: the manager skips it
        assert agent.wait_program(expected_hash(v2)).converged

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
