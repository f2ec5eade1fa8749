"""Desired state from the manager: the host's program, by a long-poll watch of
`/v1/agent/HOST/desired`.

`ManagerSource` replaces the local compile of a policy folder when the agent runs with
`--server`: the manager compiles, the agent receives its host's program. One thread (`run`)
lists then watches: the first request sends no digest (or the digest of the program read
from the cache) and is answered at once, with the whole program or the delta from the
cached one; every later request sends `after=N` (the revision it holds) and `have=D` (the
digest of its program) and is answered when the manager's programs pass revision N (200:
the delta from D, empty if this host's program did not change) or after `wait` seconds with
nothing new (204). After any error the next request lists again (no digest: the whole
program), so a reconnect always resyncs, also to a manager whose store was reset.

Every answer is checked before it is used: it must decode (`compiler.program_codec`), a delta must
apply to the program held, and the result's digest (`compiler.digest`, updated
incrementally) must equal the one the manager sent; otherwise the agent lists again. An
accepted program is written to the cache first (`program_cache`: a delta is one appended
line), then published, and `on_change` is called (the agent enqueues `policy`). On start
the cache is read, so an agent restarted while the manager is unreachable still enforces
the last program it had.

`Reporter` (another thread) PUTs the agent's status after each reconcile (and again every
`heartbeat` seconds, so the manager sees a live host), the host's inventory (its
endpoints) on each new revision, and with `--libvirt` the domains it discovered (on change
and every resync). Only the latest of each is kept and sent; failures are
retried with backoff. Nothing here raises into the agent: every network or decoding error
is logged and retried with jittered exponential backoff.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperwall.agent.program_cache import Held, ProgramCache
from hyperwall.compiler.delta import apply
from hyperwall.compiler.digest import program_digest, updated_digest
from hyperwall.compiler.program import HostProgram
from hyperwall.compiler.program_codec import WireError, delta_from_wire, program_from_wire

log = logging.getLogger(__name__)


class NotSynced(OSError):
    """No program yet: nothing from the manager and nothing in the cache."""


class ManagerError(Exception):
    """An unexpected answer from the manager (status code, body)."""


def policy_digest(held: Held) -> str:
    """What the reconciler records as the policy it enforces: `r<revision>-<digest>`."""
    return f"r{held.revision}-{held.digest_text}"


def revision_of(digest: str | None) -> int | None:
    """The revision a `policy_digest` names (None for other digests)."""
    if not digest or not digest.startswith("r"):
        return None
    head = digest[1:].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def host_inventory(program: HostProgram) -> list[dict[str, Any]]:
    """The host's VM interfaces as the agent enforces them (its inventory report)."""
    return [
        {"workload": ep.workload, "interface": ep.interface, "mac": ep.mac, "ips": list(ep.ips)}
        for ep in program.endpoints.values()
    ]


def backoff(failures: int, base: float = 0.2, cap: float = 10.0) -> float:
    """Exponential backoff with jitter (50-100 % of the step), capped."""
    step: float = min(cap, base * 2 ** max(0, failures - 1))
    return step * random.uniform(0.5, 1.0)


class Client:
    """The agent's HTTP client of the manager's `/v1/agent/HOST/...` endpoints (stdlib)."""

    def __init__(self, server: str, token: str, host: str, verify_tls: bool = True) -> None:
        self.base = server.rstrip("/") + "/v1/agent/" + urllib.parse.quote(host, safe="")
        self.token = token
        self.context: ssl.SSLContext | None = None
        if server.startswith("https:"):
            self.context = ssl.create_default_context()
            if not verify_tls:
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE

    def _request(
        self, method: str, path: str, body: Any = None, timeout: float = 10.0
    ) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.context) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode(errors="replace")
            raise ManagerError(f"{method} {path}: HTTP {exc.code}: {detail}") from None

    def desired(self, after: int, have: str | None, wait: float) -> dict[str, Any] | None:
        """The manager's answer once its programs pass revision `after` (or at once if
        `have` is not the current digest); None on 204."""
        params: dict[str, Any] = {"after": after, "wait": f"{wait:g}"}
        if have is not None:
            params["have"] = have
        query = urllib.parse.urlencode(params)
        # generous: a whole program of a big host can take the manager a while to send
        code, body = self._request("GET", f"/desired?{query}", timeout=wait + 120.0)
        if code == 204:
            return None
        if code != 200:
            raise ManagerError(f"GET desired: unexpected HTTP {code}")
        try:
            reply = json.loads(body)
        except ValueError as exc:
            raise ManagerError(f"GET desired: bad reply: {exc}") from None
        if not isinstance(reply, dict):
            raise ManagerError("GET desired: bad reply: not an object")
        return reply

    def put(self, what: str, body: dict[str, Any]) -> Any:
        """PUT a report; the decoded answer (None for 204)."""
        code, answer = self._request("PUT", f"/{what}", body)
        if code not in (200, 204):
            raise ManagerError(f"PUT {what}: unexpected HTTP {code}")
        try:
            return json.loads(answer) if code == 200 and answer else None
        except ValueError as exc:
            raise ManagerError(f"PUT {what}: bad reply: {exc}") from None


class ManagerSource:
    """The host's program from the manager, cached on disk; `load()` for the reconciler."""

    def __init__(
        self,
        server: str,
        token: str,
        host: str,
        cache_dir: Path,
        verify_tls: bool = True,
        wait_seconds: float = 30.0,
        max_backoff: float = 10.0,
    ) -> None:
        self.server = server
        self.host = host
        self.cache = ProgramCache(cache_dir, server, host)
        self.client = Client(server, token, host, verify_tls)
        self.wait_seconds = wait_seconds
        self.max_backoff = max_backoff
        self._lock = threading.Lock()
        self._current: Held | None = self.cache.read()
        self._last_error: str | None = None  # connection problem, for the "not synced" error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_change: Callable[[], None] = lambda: None
        self.synced = threading.Event()  # set after the first successful answer
        self.digest_mismatches = 0  # answers whose program did not verify (agent.metrics)
        if self._current is not None:
            log.info("loaded revision %d from the cache", self._current.revision)

    # -- the state --------------------------------------------------------------------------

    @property
    def current(self) -> Held | None:
        with self._lock:
            return self._current

    @property
    def revision(self) -> int:
        """The revision of the program held; -1 if none."""
        with self._lock:
            return self._current.revision if self._current else -1

    def load(self) -> tuple[HostProgram, str]:
        """The latest program and its policy digest; NotSynced if there is none yet."""
        with self._lock:
            current = self._current
            if current is None:
                why = f": {self._last_error}" if self._last_error else ""
                raise NotSynced(f"no program yet from {self.server}{why}")
        return current.program, policy_digest(current)

    def accept(self, answer: dict[str, Any]) -> bool:
        """Take one answer of the manager; True if the desired state changed. Raises
        ManagerError if it does not decode, apply or verify (the caller lists again)."""
        try:
            revision = answer["revision"]
            digest = answer["digest"]
            if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
                raise ManagerError(f"bad revision {revision!r}")
            held = self.current
            if answer.get("delta") is not None:
                if held is None or answer.get("base") != held.digest_text:
                    raise ManagerError("a delta for a program this agent does not hold")
                change = delta_from_wire(answer["delta"])
                if change.is_empty():
                    new = Held(revision, held.program, held.digest)
                else:
                    value = updated_digest(held.digest, held.program, change)
                    new = Held(revision, apply(held.program, change), value)
            else:
                program = program_from_wire(answer["program"])
                new = Held(revision, program, program_digest(program))
        except (KeyError, TypeError, ValueError, WireError) as exc:
            raise ManagerError(f"bad program from the manager: {exc}") from None
        if new.digest_text != digest:
            self.digest_mismatches += 1
            raise ManagerError(f"program digest {new.digest_text} != the manager's {digest}")
        if new.program.host != self.host:
            raise ManagerError(f"a program for host {new.program.host!r}")
        if held is not None and new.digest == held.digest and new.revision == held.revision:
            return False
        try:  # persist first, then publish: what is enforced is in the cache
            if held is not None and answer.get("delta") is not None:
                if new.digest != held.digest:
                    self.cache.append_delta(revision, held.digest_text, answer["delta"], new)
            else:
                self.cache.write_program(new)
        except OSError as exc:  # enforcement goes on; the next restart may be older
            log.warning("cannot write the cache in %s: %s", self.cache.directory, exc)
        with self._lock:
            self._current = new
        return True

    # -- the watch thread -----------------------------------------------------------------

    def start(self, on_change: Callable[[], None]) -> None:
        self.on_change = on_change
        self._thread = threading.Thread(target=self.run, name="manager-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        failures = 0
        listed = False
        whole = False  # ask for the whole program (the last answer did not verify)
        while not self._stop.is_set():
            held = self.current
            have = held.digest_text if held is not None and not whole else None
            after = held.revision if (listed and held is not None) else -1
            try:
                answer = self.client.desired(after, have, self.wait_seconds)
                changed = answer is not None and self.accept(answer)
            except Exception as exc:  # network, HTTP, decoding: retry; never crash the agent
                failures += 1
                listed = False
                with self._lock:
                    self._last_error = str(exc)
                delay = backoff(failures, cap=self.max_backoff)
                log.warning("manager %s: %s; retrying in %.1f s", self.server, exc, delay)
                whole = isinstance(exc, ManagerError)  # start over from the whole program
                self._stop.wait(delay)
                continue
            failures = 0
            listed = True
            whole = False
            with self._lock:
                self._last_error = None
            self.synced.set()
            if changed:
                self.on_change()
            elif answer is not None and after >= 0 and answer["revision"] <= after:
                self._stop.wait(1.0)  # not newer (a misbehaving server): no busy loop


@dataclass
class StatusReport:
    revision: int
    program_hash: str | None
    converged: bool
    error: str | None
    endpoints: int

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "programHash": self.program_hash,
            "converged": self.converged,
            # the manager takes at most 4096 characters (manager_api.MAX_ERROR)
            "error": self.error if self.error is None else self.error[:4000],
            "endpoints": self.endpoints,
        }


class Reporter:
    """Sends the latest status, inventory and discovered domains to the manager from its own
    thread. Only the latest of each is kept: a newer one replaces an unsent or failed one."""

    def __init__(self, client: Client, max_backoff: float = 10.0, heartbeat: float = 10.0) -> None:
        self.client = client
        self.max_backoff = max_backoff
        self.heartbeat = heartbeat  # the manager marks a host unreachable after 30 s of silence
        self._cond = threading.Condition()
        self._pending: dict[str, dict[str, Any]] = {}  # endpoint -> body, sent in this order
        self._stop = False
        self._thread: threading.Thread | None = None
        self.sent = 0  # successful rounds of PUTs (for tests and logs)
        self.answers: dict[str, Any] = {}  # endpoint -> the manager's last answer

    def _queue(self, what: str, body: dict[str, Any]) -> None:
        with self._cond:
            self._pending[what] = body
            self._cond.notify()

    def status(self, report: StatusReport) -> None:
        self._queue("status", report.to_json())

    def inventory(self, workloads: list[dict[str, Any]]) -> None:
        self._queue("inventory", {"workloads": workloads})

    def discovered(self, report: dict[str, Any]) -> None:
        """The workloads found on the hypervisor (`libvirt_source.discovered_report`)."""
        self._queue("discovered", report)

    def hits(self, report: dict[str, Any]) -> None:
        """The host's per-rule hit totals (`agent.hits.HitTracker.report`)."""
        self._queue("hits", report)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="manager-report", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        failures = 0
        last: dict[str, Any] | None = None  # the status, resent as a heartbeat
        order = ("inventory", "discovered", "status", "hits")
        while True:
            with self._cond:
                idle = self._cond.wait_for(
                    lambda: self._stop or bool(self._pending), self.heartbeat
                )
                if self._stop:
                    return
                if not idle and last is not None:
                    self._pending["status"] = last
                batch = [(w, self._pending.pop(w)) for w in order if w in self._pending]
            if not batch:
                continue
            try:
                while batch:
                    what, body = batch[0]
                    answer = self.client.put(what, body)
                    self.answers[what] = answer
                    if what == "discovered":
                        _log_refused(answer)
                    if what == "status":
                        last = body
                    batch.pop(0)
                failures = 0
                self.sent += 1
            except Exception as exc:  # keep the unsent ones unless newer ones arrived
                failures += 1
                delay = backoff(failures, cap=self.max_backoff)
                log.warning("reporting to the manager failed: %s; retrying in %.1f s", exc, delay)
                with self._cond:
                    for what, body in batch:
                        self._pending.setdefault(what, body)
                    self._cond.wait_for(lambda: self._stop, delay)


_refused_logged: dict[str, str] = {}


def _log_refused(answer: Any) -> None:
    """Log each domain the manager refused when its reason first shows."""
    refused = answer.get("refused") if isinstance(answer, dict) else None
    if not isinstance(refused, dict):
        return
    for domain, why in refused.items():
        if _refused_logged.get(domain) != why:
            log.warning("the manager refused domain %r: %s", domain, why)
    _refused_logged.clear()
    _refused_logged.update(refused)
