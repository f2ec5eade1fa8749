"""Declared documents + the domains libvirt reports -> one validated catalog (pure).

The host's own workloads come from its hypervisor only: a declared Workload whose
`spec.host` is this host is left out, and so is a declared Workload (of any host) with the
same tenant and name as a discovered one (the hypervisor knows where a VM runs and which
addresses it has; the conflict is reported). A discovered domain whose documents do not fit
the rest (an unknown tenant, an embedded rule naming a group that does not exist, a name
or address already taken) is left out alone: its interfaces fail closed, the other domains
and the declared documents are unaffected. Problems in the declared documents are the
caller's: `DocumentsInvalid` as for any document set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hyperwall.hypervisor.domain_xml import (
    Invalid,
    Managed,
    ParsedDomain,
    Problem,
    Unmanaged,
    problems_of,
    source_of,
)
from hyperwall.policy.catalog import build_catalog
from hyperwall.policy.errors import DocumentsInvalid, Issue, Source
from hyperwall.policy.model import Catalog

_PREFIX = source_of("").file  # "libvirt domain "


@dataclass(frozen=True, slots=True)
class Merged:
    catalog: Catalog
    managed: tuple[str, ...]  # domains whose workload is in the catalog
    unmanaged: Mapping[str, str]  # domain -> why it fails closed
    conflicts: tuple[str, ...]  # declared workloads replaced by a discovered one


def _key(raw: Any) -> tuple[str, str | None, str] | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("metadata"), dict):
        return None
    meta = raw["metadata"]
    return (str(raw.get("kind")), meta.get("tenant"), str(meta.get("name")))


def _declared_host(raw: Any) -> str | None:
    spec = raw.get("spec") if isinstance(raw, dict) else None
    return spec.get("host") if isinstance(spec, dict) else None


def placement(raw: Any) -> Any:
    """What a declared and a discovered Workload must agree on: host and addresses."""
    spec = raw.get("spec") if isinstance(raw, dict) else None
    if not isinstance(spec, dict):
        return None
    interfaces = spec.get("interfaces")
    addresses = [
        (str(i.get("mac", "")).lower(), sorted(map(str, i.get("ips") or [])))
        for i in (interfaces if isinstance(interfaces, list) else [])
        if isinstance(i, dict)
    ]
    return spec.get("host"), addresses


def _domain_of(source: Source) -> str | None:
    return source.file[len(_PREFIX) :] if source.file.startswith(_PREFIX) else None


def merge(
    declared: Sequence[tuple[Any, Source]], domains: Sequence[ParsedDomain], host: str
) -> Merged:
    """The catalog of the declared documents and this host's managed domains."""
    unmanaged: dict[str, str] = {}
    managed: dict[str, Managed] = {}
    for dom in domains:
        if isinstance(dom, Managed):
            managed[dom.name] = dom
        elif isinstance(dom, Invalid):
            unmanaged[dom.name] = "; ".join(str(p) for p in dom.problems)
        elif isinstance(dom, Unmanaged):
            unmanaged[dom.name] = f"domain {dom.name!r}: no hyperwall metadata (hw:workload)"
    discovered = {_key(m.workload): m.workload for m in managed.values()}
    conflicts: list[str] = []
    base: list[tuple[Any, Source]] = []
    for raw, source in declared:
        key = _key(raw)
        if key is not None and key[0] == "Workload":
            if key in discovered:
                if placement(raw) != placement(discovered[key]):
                    conflicts.append(f"{key[1]}/{key[2]}" if key[1] else key[2])
                continue
            if _declared_host(raw) == host:
                continue
        base.append((raw, source))
    while True:
        docs = list(base)
        for dom in managed.values():
            docs.extend((raw, source_of(dom.name, i)) for i, raw in enumerate(dom.documents(), 1))
        try:
            catalog = build_catalog(docs, absent_workloads=True)
        except DocumentsInvalid as exc:
            blamed = _blame(exc.issues, managed)
            if not blamed:
                raise
            for name, problems in blamed.items():
                unmanaged[name] = "; ".join(str(p) for p in problems)
                del managed[name]
            continue
        return Merged(catalog, tuple(sorted(managed)), unmanaged, tuple(sorted(conflicts)))


def _blame(issues: Sequence[Issue], managed: Mapping[str, Managed]) -> dict[str, list[Problem]]:
    """The discovered domains that issues are about, with the issues as their problems."""
    by_domain: dict[str, list[Issue]] = {}
    for issue in issues:
        name = _domain_of(issue.source)
        if name is not None and name in managed:
            by_domain.setdefault(name, []).append(issue)
    out = {}
    for name, found in by_domain.items():
        dom = managed[name]
        kinds = {i: str(raw.get("kind")) for i, raw in enumerate(dom.documents(), 1)}
        out[name] = problems_of(name, found, kinds, [t.mac for t in dom.taps])
    return out
