"""Desired state with the hypervisor as the source of this host's workloads (`--libvirt`).

Two pieces compose with the agent's other sources:

- `DiscoveringFolder` (with `--policy-dir`): the folder's documents plus the domains the
  `DomainWatcher` knows, merged by `hypervisor.merge` (the host's own Workloads come from
  libvirt only; a domain whose documents do not fit fails closed alone).
- `Localized` (either source): the program bound to this host's taps
  (`hypervisor.localize`), so the kernel dispatches on libvirt's own tap names.

Until the watcher has read the domains once, both raise `NotListed` (an `OSError`): the
reconciler keeps whatever the kernel enforces now (a restarted agent with libvirtd down
keeps its VMs' rules), or the closed skeleton on a fresh boot.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from hyperwall.agent.policydir import PolicyDir
from hyperwall.agent.reconciler import ProgramLoader
from hyperwall.compiler.program import HostProgram
from hyperwall.hypervisor.domain_xml import Managed, ParsedDomain
from hyperwall.hypervisor.localize import localize
from hyperwall.hypervisor.merge import Merged, merge
from hyperwall.hypervisor.watcher import DomainWatcher, taps_of
from hyperwall.policy.model import Catalog


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
    def __init__(self, load: ProgramLoader, watcher: DomainWatcher) -> None:
        self.load = load
        self.watcher = watcher

    def __call__(self) -> tuple[HostProgram, str]:
        if not self.watcher.listed:
            raise NotListed(f"libvirt {self.watcher.uri}: {self.watcher.error or 'not read yet'}")
        program, digest = self.load()
        taps = taps_of(self.watcher.domains())
        return localize(program, taps), f"{digest}:{_fingerprint(sorted(taps.items()))}"
