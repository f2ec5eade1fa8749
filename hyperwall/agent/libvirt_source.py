"""Desired state with the hypervisor as the source of this host's workloads (`--libvirt`).

Two pieces compose with the agent's other sources:

- `DiscoveringFolder` (with `--policy-dir`): the folder's documents plus the domains the
  `DomainWatcher` knows, merged by `hypervisor.merge` (the host's own Workloads come from
  libvirt only; a domain whose documents do not fit fails closed alone).
- `Localized` (either source): the program bound to this host's taps
  (`hypervisor.localize`), so the kernel dispatches on libvirt's own tap names.

With `--server`, `discovered_report` is what the agent tells the manager it found (the
manager commits the running managed domains' documents: `manager.discovery`).

Until the watcher has read the domains once, both raise `NotListed` (an `OSError`): the
reconciler keeps whatever the kernel enforces now (a restarted agent with libvirtd down
keeps its VMs' rules), or the closed skeleton on a fresh boot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hyperwall.agent.policydir import PolicyDir
from hyperwall.agent.reconciler import ProgramLoader
from hyperwall.compiler.program import HostProgram
from hyperwall.hypervisor.domain_xml import Invalid, Managed, ParsedDomain, Unmanaged
from hyperwall.hypervisor.localize import localize
from hyperwall.hypervisor.merge import Merged, merge
from hyperwall.hypervisor.watcher import DomainWatcher, taps_of
from hyperwall.policy.model import Catalog

log = logging.getLogger(__name__)


class NotListed(OSError):
    """The hypervisor's domains have not been read yet."""


def _fingerprint(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def domains_fingerprint(domains: Mapping[str, ParsedDomain]) -> str:
    """Changes whenever what the domains mean for the catalog may have changed."""
    return _fingerprint(
        [
            [name, list(dom.documents()) if isinstance(dom, Managed) else type(dom).__name__]
            for name, dom in sorted(domains.items())
        ]
    )


class DiscoveringFolder:
    def __init__(self, folder: PolicyDir, watcher: DomainWatcher, host: str) -> None:
        self.folder = folder
        self.watcher = watcher
        self.host = host
        self.merged: Merged | None = None

    def load(self) -> tuple[Catalog, str]:
        """The merged catalog and a digest of folder + domains; raises DocumentsInvalid for
        a bad folder, NotListed before the domains were read."""
        if not self.watcher.listed:
            raise NotListed(f"libvirt {self.watcher.uri}: {self.watcher.error or 'not read yet'}")
        docs, digest = self.folder.load_raw()
        domains = self.watcher.domains()
        self.merged = merge(docs, list(domains.values()), self.host)
        return self.merged.catalog, f"{digest}:{domains_fingerprint(domains)}"


class Localized:
    """The program bound to the taps of the running domains. A tap whose name lacks the VM
    interface prefix would not be recognised as a VM interface by the kernel table (traffic
    on it would not be filtered): it gets no endpoint, and is reported in `outside`."""

    def __init__(self, load: ProgramLoader, watcher: DomainWatcher, prefix: str) -> None:
        self.load = load
        self.watcher = watcher
        self.prefix = prefix
        self.outside: dict[str, str] = {}  # tap -> domain, for taps outside the prefix

    def __call__(self) -> tuple[HostProgram, str]:
        if not self.watcher.listed:
            raise NotListed(f"libvirt {self.watcher.uri}: {self.watcher.error or 'not read yet'}")
        program, digest = self.load()
        taps = {}
        self.outside = {}
        for mac, (domain, dev) in taps_of(self.watcher.domains()).items():
            if dev.startswith(self.prefix):
                taps[mac] = (domain, dev)
            else:
                self.outside[dev] = domain
        return localize(program, taps), f"{digest}:{_fingerprint(sorted(taps.items()))}"


def domains_report(
    watcher: DomainWatcher, discovering: DiscoveringFolder | None, localized: Localized | None
) -> dict[str, Any]:
    """What the agent knows of its hypervisor: for `domains.json` and the manager."""
    domains = watcher.domains()
    unmanaged: dict[str, str] = {}
    for name, dom in domains.items():
        if isinstance(dom, Invalid):
            unmanaged[name] = "; ".join(str(p) for p in dom.problems)
        elif isinstance(dom, Unmanaged):
            unmanaged[name] = f"domain {name!r}: no hyperwall metadata (hw:workload)"
    merged = discovering.merged if discovering is not None else None
    if merged is not None:
        unmanaged.update({n: why for n, why in merged.unmanaged.items() if n in domains})
    return {
        "uri": watcher.uri,
        "connected": watcher.connected,
        "error": watcher.error,
        "domains": {
            name: {
                "state": "running" if dom.active else "shut off",
                "managed": name not in unmanaged,
                "taps": [{"mac": t.mac, "dev": t.dev, "type": t.type} for t in dom.taps],
            }
            for name, dom in sorted(domains.items())
        },
        "unmanaged": dict(sorted(unmanaged.items())),
        "conflicts": list(merged.conflicts) if merged is not None else [],
        "outside_prefix": {
            tap: f"domain {dom!r}: tap {tap!r} lacks the VM interface prefix"
            f" {localized.prefix!r}: not filtered; name it {localized.prefix}... or change"
            " --vm-prefix"
            for tap, dom in sorted(localized.outside.items())
        }
        if localized is not None
        else {},
    }


def discovered_report(watcher: DomainWatcher, report: Mapping[str, Any]) -> dict[str, Any]:
    """The body of `PUT /v1/agent/HOST/discovered` (`manager_api.DiscoveredReport`): the
    documents of the running managed domains (a domain that is shut off runs nowhere: its
    workload is not reported, so it goes from the manager's set), every domain's state and
    taps, and why the unmanaged ones are unmanaged (`report`: `domains_report`)."""
    documents = [
        dict(doc)
        for _, dom in sorted(watcher.domains().items())
        if isinstance(dom, Managed) and dom.active
        for doc in dom.documents()
    ]
    return {
        "documents": documents,
        "domains": report["domains"],
        "unmanaged": report["unmanaged"],
    }


_reported: dict[str, str] = {}


def write_domains(
    path: Path,
    watcher: DomainWatcher,
    discovering: DiscoveringFolder | None,
    localized: Localized | None,
) -> dict[str, Any]:
    """Write `domains.json` atomically; log each problem when it first shows, once. Returns
    the report written."""
    report = domains_report(watcher, discovering, localized)
    problems = {**report["unmanaged"], **report["outside_prefix"]}
    for name, why in problems.items():
        if _reported.get(name) != why:
            log.warning("libvirt: %s", why)
    _reported.clear()
    _reported.update(problems)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, path)
    return report
