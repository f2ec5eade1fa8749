"""Talking to libvirt: open a connection, read domains, run libvirt's event loop.

The I/O side of `hypervisor.domain_xml` (which does the parsing). libvirt-python is imported
here and in `hypervisor.watcher` only. libvirt prints every error on stderr unless an error
handler is registered: `quiet()` does that once per process.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

import libvirt

from hyperwall.hypervisor.domain_xml import ParsedDomain, parse_domain

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_quiet_done = threading.Lock()
_quiet: list[bool] = []
_loop_lock = threading.Lock()
_loop: list[threading.Thread] = []


class BadURI(ValueError):
    """The URI is not one libvirt can use (exit 2)."""


class Unreachable(OSError):
    """The connection could not be opened, or was lost (exit 4)."""


def quiet() -> None:
    """Errors are raised as exceptions only, not also printed by libvirt on stderr."""
    with _quiet_done:
        if not _quiet:
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
            _quiet.append(True)


def start_event_loop() -> None:
    """libvirt's default event implementation, run by one daemon thread per process. Must
    run before the connections whose events are wanted are opened."""
    with _loop_lock:
        if _loop:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        thread = threading.Thread(target=run, name="libvirt-events", daemon=True)
        thread.start()
        _loop.append(thread)


def open_connection(uri: str, read_only: bool = True) -> libvirt.virConnect:
    """Open `uri`; raises BadURI or Unreachable with libvirt's reason."""
    quiet()
    if not _SCHEME.match(uri):
        raise BadURI(f"bad libvirt URI {uri!r}: expected DRIVER[+TRANSPORT]://[HOST]/PATH")
    try:
        return libvirt.openReadOnly(uri) if read_only else libvirt.open(uri)
    except libvirt.libvirtError as exc:
        code, domain = exc.get_error_code(), exc.get_error_domain()
        if code == libvirt.VIR_ERR_NO_CONNECT or domain == libvirt.VIR_FROM_URI:
            raise BadURI(f"bad libvirt URI {uri!r}: {exc}") from None
        raise Unreachable(f"cannot open libvirt connection {uri!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class DomainXML:
    name: str
    xml: str


def _xml(dom: libvirt.virDomain) -> str | None:
    try:
        return str(dom.XMLDesc(0))
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None  # undefined between the listing and this read
        raise


def read_domain(conn: libvirt.virConnect, name: str) -> str | None:
    """The current XML of one domain (the live one if it runs), or None if it is gone."""
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise
    return _xml(dom)


def read_all(conn: libvirt.virConnect) -> list[DomainXML]:
    """Every domain of the connection (running and defined), in name order."""
    out = []
    for dom in conn.listAllDomains(0):
        xml = _xml(dom)
        if xml is not None:
            out.append(DomainXML(str(dom.name()), xml))
    return sorted(out, key=lambda d: d.name)


def discover(conn: libvirt.virConnect, host: str) -> list[ParsedDomain]:
    """Every domain of the connection, parsed, in name order."""
    return [parse_domain(d.xml, host) for d in read_all(conn)]


def host_name(conn: libvirt.virConnect) -> str:
    return str(conn.getHostname()).split(".")[0].lower()
