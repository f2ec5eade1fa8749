"""Desired state from the manager: a long-poll watch of `/v1/agent/HOST/desired`.

`ManagerSource` replaces `PolicyDir` when the agent runs with `--server`. One thread
(`run`) lists then watches: the first request asks `after=0` (or after the revision read
from the cache) and is answered at once; every later one asks `after=N`, N the revision it
holds, and is answered when the manager has a newer revision (200) or after `wait` seconds
with nothing new (204). After any error the next request lists again (`after=0`), so a
reconnect always resyncs, also to a manager whose store was reset.

Every revision is validated with `build_catalog` before it is used. Valid: it becomes the
desired state, is written atomically to `CACHE_DIR/desired.json`, and `on_change` is
called (the agent enqueues `policy`). Invalid: the last valid documents stay and `load()`
reports the error (the reconciler keeps the last valid program and reports
`converged: false`). On start the cache is read, so an agent restarted while the manager
is unreachable still enforces the last policy it had.

`Reporter` (another thread) PUTs the agent's status after each reconcile (and again every
`heartbeat` seconds, so the manager sees a live host) and the host's inventory (the
Workload documents with `spec.host == host`) on each new revision. Only the latest of each
is kept and sent; failures are retried with backoff. Nothing here raises
into the agent: every network or decoding error is logged and retried with jittered
exponential backoff.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
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

from hyperwall.policy.catalog import build_catalog
from hyperwall.policy.errors import DocumentsInvalid, Issue, Source
from hyperwall.policy.model import Catalog

log = logging.getLogger(__name__)

CACHE_FILE = "desired.json"


class NotSynced(OSError):
    """No valid desired state yet: nothing from the manager and nothing in the cache."""


class ManagerError(Exception):
    """An unexpected answer from the manager (status code, body)."""


@dataclass(frozen=True, slots=True)
class Desired:
    """One valid revision of the documents, validated."""

    revision: int
    documents: tuple[dict[str, Any], ...]
    catalog: Catalog
    digest: str  # revision-based: "r<N>-<content hash>"


def content_digest(revision: int, documents: list[dict[str, Any]] | tuple[Any, ...]) -> str:
    text = json.dumps(list(documents), sort_keys=True, separators=(",", ":"))
    return f"r{revision}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def revision_of(digest: str | None) -> int | None:
    """The revision a digest of `content_digest` names (None for other digests)."""
    if not digest or not digest.startswith("r"):
        return None
    head = digest[1:].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def validate(revision: int, documents: Any, origin: str) -> Desired:
    """Validate a revision's documents; raise DocumentsInvalid."""
    where = f"{origin} revision {revision}"
    if not isinstance(documents, list) or not all(isinstance(d, dict) for d in documents):
        raise DocumentsInvalid([Issue(Source(where, 0), "", "documents must be a list of objects")])
    catalog = build_catalog((doc, Source(where, i + 1)) for i, doc in enumerate(documents))
    return Desired(revision, tuple(documents), catalog, content_digest(revision, documents))


def host_workloads(documents: tuple[dict[str, Any], ...], host: str) -> list[dict[str, Any]]:
    """The Workload documents placed on `host` (the inventory until libvirt discovery)."""
    out = []
    for doc in documents:
        spec = doc.get("spec")
        if doc.get("kind") == "Workload" and isinstance(spec, dict) and spec.get("host") == host:
            out.append(doc)
    return out


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

    def desired(self, after: int, wait: float) -> tuple[int, Any] | None:
        """(revision, documents) when the manager has a revision > after; None on 204."""
        query = urllib.parse.urlencode({"after": after, "wait": f"{wait:g}"})
        code, body = self._request("GET", f"/desired?{query}", timeout=wait + 15.0)
        if code == 204:
            return None
        if code != 200:
            raise ManagerError(f"GET desired: unexpected HTTP {code}")
        try:
            reply = json.loads(body)
            revision, documents = reply["revision"], reply["documents"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ManagerError(f"GET desired: bad reply: {exc}") from None
        if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
            raise ManagerError(f"GET desired: bad revision {revision!r}")
        return revision, documents

    def put(self, what: str, body: dict[str, Any]) -> None:
        code, _ = self._request("PUT", f"/{what}", body)
        if code not in (200, 204):
            raise ManagerError(f"PUT {what}: unexpected HTTP {code}")


class ManagerSource:
    """The desired documents from the manager, cached on disk; `load()` for the reconciler."""

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
        self.cache_path = cache_dir / CACHE_FILE
        self.client = Client(server, token, host, verify_tls)
        self.wait_seconds = wait_seconds
        self.max_backoff = max_backoff
        self._lock = threading.Lock()
        self._current: Desired | None = None
        self._invalid: tuple[int, DocumentsInvalid] | None = None  # newer, refused revision
        self._served: str | None = None  # digest last returned by load()
        self._last_error: str | None = None  # connection problem, for the "not synced" error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_change: Callable[[], None] = lambda: None
        self.synced = threading.Event()  # set after the first successful answer
        self._read_cache()

    # -- the state --------------------------------------------------------------------------

    @property
    def current(self) -> Desired | None:
        with self._lock:
            return self._current

    @property
    def revision(self) -> int:
        """The newest revision seen (valid or not); 0 if none."""
        with self._lock:
            valid = self._current.revision if self._current else 0
            return max(valid, self._invalid[0] if self._invalid else 0)

    def load(self) -> tuple[Catalog, str]:
        """The latest valid catalog and its digest; raise DocumentsInvalid or NotSynced.

        When the newest revision is invalid the last valid one is still returned once (a
        reconciler that never had it, e.g. after a restart, enforces it); after that the
        error is raised, so the reconciler keeps that program and reports the problem.
        """
        with self._lock:
            current, invalid = self._current, self._invalid
            if current is None:
                if invalid is not None:
                    raise invalid[1]
                why = f": {self._last_error}" if self._last_error else ""
                raise NotSynced(f"no desired state yet from {self.server}{why}")
            if invalid is not None and self._served == current.digest:
                raise invalid[1]
            again = invalid is not None and self._served != current.digest
            self._served = current.digest
        if again:
            self.on_change()  # report the pending error with the next reconcile
        return current.catalog, current.digest

    def _read_cache(self) -> None:
        try:
            data = json.loads(self.cache_path.read_text())
            if data.get("host", self.host) != self.host:
                raise ValueError(f"it is the cache of host {data['host']!r}")
            desired = validate(int(data["revision"]), data["documents"], "cache")
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, DocumentsInvalid) as exc:
            log.warning("ignoring the cache %s: %s", self.cache_path, exc)
            return
        self._current = desired
        log.info("loaded revision %d from the cache", desired.revision)

    def _write_cache(self, desired: Desired) -> None:
        body = {"server": self.server, "host": self.host, "revision": desired.revision}
        body["documents"] = list(desired.documents)
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_name(self.cache_path.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(body, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.cache_path)

    def accept(self, revision: int, documents: Any) -> bool:
        """Take one revision from the manager; True if the desired state changed."""
        try:
            desired = validate(revision, documents, self.server)
        except DocumentsInvalid as exc:
            log.warning("revision %d is invalid, keeping the last valid one: %s", revision, exc)
            with self._lock:
                changed = self._invalid is None or self._invalid[0] != revision
                self._invalid = (revision, exc)
            return changed
        with self._lock:  # (only the watch thread changes the state)
            same = self._current is not None and self._current.digest == desired.digest
        if not same:  # persist first, then publish: what is enforced is in the cache
            try:
                self._write_cache(desired)
            except OSError as exc:  # enforcement goes on; the next restart may be older
                log.warning("cannot write the cache %s: %s", self.cache_path, exc)
        with self._lock:
            cleared = self._invalid is not None  # the reported error goes away
            self._current = desired
            self._invalid = None
        return cleared or not same

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
        while not self._stop.is_set():
            after = self.revision if listed else 0
            try:
                answer = self.client.desired(after, self.wait_seconds)
            except Exception as exc:  # network, HTTP, decoding: retry; never crash the agent
                failures += 1
                listed = False
                with self._lock:
                    self._last_error = str(exc)
                delay = backoff(failures, cap=self.max_backoff)
                log.warning("manager %s: %s; retrying in %.1f s", self.server, exc, delay)
                self._stop.wait(delay)
                continue
            failures = 0
            listed = True
            with self._lock:
                self._last_error = None
            self.synced.set()
            if answer is None:
                continue
            if after and answer[0] <= after:  # not newer (a misbehaving server): no busy loop
                self._stop.wait(1.0)
            if self.accept(*answer):
                self.on_change()


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
            "error": self.error,
            "endpoints": self.endpoints,
        }


class Reporter:
    """Sends the latest status and inventory to the manager from its own thread."""

    def __init__(self, client: Client, max_backoff: float = 10.0, heartbeat: float = 10.0) -> None:
        self.client = client
        self.max_backoff = max_backoff
        self.heartbeat = heartbeat  # the manager marks a host unreachable after 30 s of silence
        self._cond = threading.Condition()
        self._status: StatusReport | None = None
        self._inventory: list[dict[str, Any]] | None = None
        self._stop = False
        self._thread: threading.Thread | None = None
        self.sent = 0  # successful PUTs (for tests and logs)

    def status(self, report: StatusReport) -> None:
        with self._cond:
            self._status = report
            self._cond.notify()

    def inventory(self, workloads: list[dict[str, Any]]) -> None:
        with self._cond:
            self._inventory = workloads
            self._cond.notify()

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
        last: StatusReport | None = None  # resent as a heartbeat when nothing is new
        while True:
            with self._cond:
                idle = self._cond.wait_for(
                    lambda: self._stop or self._status is not None or self._inventory is not None,
                    self.heartbeat,
                )
                if self._stop:
                    return
                if not idle and last is not None:
                    self._status = last
                status, inventory = self._status, self._inventory
                self._status = self._inventory = None
            if status is None and inventory is None:
                continue
            try:
                if inventory is not None:
                    self.client.put("inventory", {"workloads": inventory})
                    inventory = None
                if status is not None:
                    self.client.put("status", status.to_json())
                    last, status = status, None
                failures = 0
                self.sent += 1
            except Exception as exc:  # keep the unsent ones unless newer ones arrived
                failures += 1
                delay = backoff(failures, cap=self.max_backoff)
                log.warning("reporting to the manager failed: %s; retrying in %.1f s", exc, delay)
                with self._cond:
                    if self._status is None:
                        self._status = status
                    if self._inventory is None:
                        self._inventory = inventory
                    self._cond.wait_for(lambda: self._stop, delay)
