"""The agent's view of its hypervisor: libvirt's domains, kept current by events.

`DomainWatcher` holds the parsed domains of one libvirt connection. Every event that can
change what a domain means for the firewall (lifecycle: defined, started, resumed,
suspended, stopped, undefined, migrated; a device added or removed; a metadata change)
only calls `notify(domain name)`: the agent queues a key, and its worker calls `refresh`,
which reads that domain again (level-triggered: the event says what to look at, not what
changed). `relist` re-reads everything: at connect, on the periodic resync, after a reconnect.

If libvirtd goes away the last known domains stay (enforcement goes on unchanged), and a
thread reconnects with capped exponential backoff, then relists. Counterparts:
`hypervisor.domain_xml` (parsing), `hypervisor.libvirt_conn` (the connection).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import libvirt

from hyperwall.hypervisor import libvirt_conn
from hyperwall.hypervisor.domain_xml import ParsedDomain, parse_domain

log = logging.getLogger(__name__)
RELIST = "*"  # the name `notify` passes when every domain should be read again

_DOMAIN_EVENTS = (
    libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
    libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED,
    libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
    libvirt.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE,
)


class DomainWatcher:
    def __init__(
        self,
        uri: str,
        host: str,
        notify: Callable[[str], None],
        max_backoff: float = 10.0,
        keepalive: bool = True,
    ) -> None:
        self.uri = uri
        self.host = host
        self.notify = notify
        self.max_backoff = max_backoff
        self.keepalive = keepalive
        self._lock = threading.Lock()
        self._domains: dict[str, ParsedDomain] = {}
        self._conn: libvirt.virConnect | None = None
        self._callbacks: list[int] = []
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._broken: str | None = None  # set when the connection was lost, until closed
        self.error: str | None = None  # why there is no connection now
        self.listed = False  # domains read at least once (else nothing is known yet)
        self.connects = 0

    # --- state ---------------------------------------------------------------------

    def domains(self) -> dict[str, ParsedDomain]:
        with self._lock:
            return dict(self._domains)

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._broken is None

    def refresh(self, name: str) -> None:
        """Read one domain again (RELIST: all of them); keeps the last state on errors."""
        conn = self._conn
        if conn is None or self._broken is not None:
            return
        try:
            if name == RELIST:
                found = {
                    d.name: parse_domain(d.xml, self.host) for d in libvirt_conn.read_all(conn)
                }
                with self._lock:
                    self._domains = found
                    self.listed = True
                return
            xml = libvirt_conn.read_domain(conn, name)
            with self._lock:
                if xml is None:
                    self._domains.pop(name, None)
                else:
                    self._domains[name] = parse_domain(xml, self.host)
        except libvirt.libvirtError as exc:
            self._lost(f"reading domain {name}: {exc}")

    # --- connection ----------------------------------------------------------------

    def start(self) -> None:
        libvirt_conn.quiet()
        libvirt_conn.start_event_loop()
        self._thread = threading.Thread(target=self._run, name="libvirt-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._close()

    def wait_listed(self, timeout: float) -> bool:
        """True once the domains were read (for tests and the first sync)."""
        deadline = threading.Event()
        waited = 0.0
        while not self.listed and waited < timeout:
            deadline.wait(0.05)
            waited += 0.05
        return self.listed

    def _run(self) -> None:
        """The one thread that opens and closes connections (never libvirt's event thread:
        closing a connection from its own close callback stalls libvirt's event loop)."""
        backoff = 0.1
        while not self._stop.is_set():
            if self._broken is not None:
                self._close()
                self._broken = None
            if self._conn is None:
                try:
                    self._connect()
                    backoff = 0.1
                except (libvirt_conn.Unreachable, libvirt_conn.BadURI, libvirt.libvirtError) as e:
                    self.error = str(e)
                    self._wake.wait(backoff)
                    self._wake.clear()
                    backoff = min(self.max_backoff, backoff * 2)
                    continue
            self._wake.wait(1.0)
            self._wake.clear()

    def _connect(self) -> None:
        conn = libvirt_conn.open_connection(self.uri, read_only=True)
        if self.keepalive and not self.uri.startswith("test:"):
            with contextlib.suppress(libvirt.libvirtError):  # local drivers have none
                conn.setKeepAlive(2, 3)
        ids = [
            conn.domainEventRegisterAny(None, event, self._event(event), None)
            for event in _DOMAIN_EVENTS
        ]
        with contextlib.suppress(libvirt.libvirtError):  # test:// has no close callbacks
            conn.registerCloseCallback(self._closed, None)
        with self._lock:
            self._conn = conn
            self._callbacks = ids
        self.error = None
        self.connects += 1
        log.info("libvirt: connected to %s", self.uri)
        self.refresh(RELIST)
        self.notify(RELIST)

    def _event(self, event: int) -> Callable[..., None]:
        def on_event(_conn: Any, dom: libvirt.virDomain, *_args: Any) -> None:
            try:
                self.notify(str(dom.name()))
            except Exception:  # never raise into libvirt's event loop
                log.exception("libvirt event %d", event)

        return on_event

    def _closed(self, _conn: Any, reason: int, _opaque: Any) -> None:
        self._lost(f"connection closed (reason {reason})")

    def _lost(self, why: str) -> None:
        """The connection is unusable: stop using it now; the watch thread closes it and
        reconnects. Called from libvirt's event thread or the agent's worker."""
        if self._conn is None or self._broken is not None:
            return
        log.warning("libvirt: %s; keeping the last known domains, reconnecting", why)
        self.error = why
        self._broken = why
        self._wake.set()
        self.notify(RELIST)  # the agent reports the lost connection (nothing else changes)

    def _close(self) -> None:
        with self._lock:
            conn, ids = self._conn, self._callbacks
            self._conn, self._callbacks = None, []
        if conn is None:
            return
        for cb in ids:
            with contextlib.suppress(libvirt.libvirtError):
                conn.domainEventDeregisterAny(cb)
        with contextlib.suppress(libvirt.libvirtError):
            conn.unregisterCloseCallback()
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def taps_of(domains: Mapping[str, ParsedDomain]) -> dict[str, tuple[str, str]]:
    """MAC -> (domain, tap) for the running domains' interfaces that have a tap."""
    out: dict[str, tuple[str, str]] = {}
    for name in sorted(domains):
        dom = domains[name]
        if not dom.active:
            continue
        for tap in dom.taps:
            if tap.dev is not None:
                out.setdefault(tap.mac, (name, tap.dev))
    return out
