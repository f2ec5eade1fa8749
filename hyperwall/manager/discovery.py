"""What an agent's discovery report means for the stored documents (pure: no I/O).

An agent running with `--libvirt` reports its host's running managed domains as documents
(each domain X: its Workload X, with `spec.host` = the host, and the Policy `vm-X` of its
embedded rules, if any), plus every domain's state and taps and why the unmanaged ones are
unmanaged (`PUT /v1/agent/{host}/discovered`). `check_report` refuses a report that claims
what this host may not (403) or is not shaped so (422). `plan` turns an accepted report
into the puts and deletes of one revision, the domains refused, the conflicts with declared
documents, and the host's record (its inventory), from which the next report learns what
this host reported before. The manager (`service.Manager.discovered`) reads the store,
calls `plan` and commits; counterpart on the agent: `agent/libvirt_source.discovered_report`.

Rules (docs/design/manager.md, "Discovered workloads"):
- The hypervisor wins: a reported document replaces a stored one of the same key. A stored
  Workload that was not reported by a discovering host (a declared one) whose host or
  addresses differ is a conflict, kept in the record (and shown by `status`) until the two
  agree again or the domain goes away.
- Deletes: a document this host reported before (its record) and no longer reports, if
  the stored Workload is still on this host (a VM that migrated and was reported by its new
  host is not deleted by the old host's late report). A Policy `vm-X` goes with Workload X.
- A domain whose documents do not validate with the rest is refused alone (its documents,
  if stored from an earlier report, are deleted: it fails closed); the others commit.
- The stored set is validated with `absent_workloads` (`CatalogState`): a reference to a
  workload that went away matches nothing, so a report is never refused for that.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hyperwall.hypervisor.domain_xml import policy_name
from hyperwall.hypervisor.merge import placement
from hyperwall.manager.auth import Refused
from hyperwall.manager.catalogs import state_key, stored_source
from hyperwall.manager.documents import BadRequest, keys_of
from hyperwall.policy.catalog_state import CatalogState
from hyperwall.policy.errors import DocumentsInvalid, Issue, Source
from hyperwall.store import DocKey, Document
from hyperwall.store.changes import canonical

Record = list[dict[str, Any]]
"""A host's inventory as the manager keeps it: one entry per domain (see `_entry`)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    puts: list[Document]
    deletes: list[DocKey]
    refused: dict[str, str]  # domain -> why the manager refused its documents
    conflicts: list[dict[str, Any]]
    pending: Record  # to store before committing: what this host reported, old and new
    record: Record  # to store after committing
    message: str


def digest(doc: Document) -> str:
    return hashlib.sha256(canonical(doc).encode()).hexdigest()[:16]


def _where(number: int, key: DocKey) -> str:
    return f"document {number} ({key})"


def check_report(host: str, documents: Sequence[Any]) -> dict[str, list[Document]]:
    """The report's documents by domain (= Workload name); Refused (403) for a Workload of
    another host, BadRequest (422) for anything but Workloads and their `vm-` Policies."""
    keys = keys_of(list(documents))
    if len(set(keys)) != len(keys):
        raise BadRequest([_issue(0, "", "a document is given twice in one report")])
    units: dict[str, list[Document]] = {}
    tenants: dict[str, str | None] = {}
    for number, (key, doc) in enumerate(zip(keys, documents, strict=True), 1):
        if key.kind != "Workload":
            continue
        spec = doc.get("spec")
        where = spec.get("host") if isinstance(spec, dict) else None
        if where != host:
            raise Refused(403, f"{_where(number, key)}: spec.host {where!r} is not {host!r}")
        if key.name in units:
            raise BadRequest([_issue(number, "metadata.name", "two Workloads of one domain")])
        units[key.name] = [doc]
        tenants[key.name] = key.tenant
    for number, (key, doc) in enumerate(zip(keys, documents, strict=True), 1):
        if key.kind == "Workload":
            continue
        domain = key.name.removeprefix("vm-")
        problem = None
        if key.kind != "Policy":
            problem = "a report holds only Workloads and their vm- Policies"
        elif key.name != policy_name(domain) or domain not in units:
            problem = "a Policy must be named vm-X for a Workload X of this report"
        elif tenants[domain] != key.tenant:
            problem = f"not the tenant of Workload {domain!r} ({tenants[domain]!r})"
        elif not isinstance(doc.get("spec"), dict) or doc["spec"].get("appliedTo") != {
            "workload": domain
        }:
            problem = f"spec.appliedTo must be {{workload: {domain}}}"
        if problem is not None:
            raise BadRequest([_issue(number, "", f"{_where(number, key)}: {problem}")])
        units[domain].append(doc)
    return units


def _issue(number: int, path: str, message: str) -> dict[str, object]:
    return Issue(Source("request", number), path, message).to_json()


# -- the record -------------------------------------------------------------------------


def _reported(record: Record) -> dict[DocKey, set[str]]:
    """Every document key a record names, with the digests it was reported with."""
    out: dict[DocKey, set[str]] = {}
    for entry in record:
        for kind, tenant, name, value in entry.get("documents") or []:
            out.setdefault(DocKey(kind, tenant, name), set()).add(value)
    return out


def _record_of(records: Mapping[str, Any], host: str) -> Record:
    """A host's discovery record (an inventory of another shape, e.g. from an agent
    without `--libvirt`, counts as none)."""
    value = records.get(host)
    if not isinstance(value, list):
        return []
    return [e for e in value if isinstance(e, dict) and "domain" in e]


def _placement_json(doc: Document) -> dict[str, Any]:
    host, addresses = placement(doc)
    return {"host": host, "addresses": [[mac, ips] for mac, ips in addresses]}


def _domain_source(host: str, domain: str, number: int) -> Source:
    return Source(f"discovered on {host}: domain {domain}", number)


# -- the plan ---------------------------------------------------------------------------


def plan(
    host: str,
    units: Mapping[str, list[Document]],
    domains: Mapping[str, Mapping[str, Any]],
    unmanaged: Mapping[str, str],
    stored: Mapping[DocKey, Document],
    records: Mapping[str, Any],
    state: CatalogState,
) -> Outcome:
    """The revision a report means (see the module docstring). `domains`: every domain's
    state and taps; `unmanaged`: domain -> why; `stored`, `state`: the current documents
    and their validated state; `records`: every host's inventory as stored."""
    old = _record_of(records, host)
    mine = _reported(old)
    elsewhere: dict[DocKey, set[str]] = {}
    for other in records:
        if other != host:
            for key, digests in _reported(_record_of(records, other)).items():
                elsewhere.setdefault(key, set()).update(digests)
    accepted = dict(units)
    refused: dict[str, str] = {}
    while True:
        puts, deletes, sources = _changes(host, accepted, stored, mine)
        failed = _refusals(host, state, puts, deletes, sources)
        if not failed:
            break
        for domain, why in failed.items():
            refused[domain] = why
            del accepted[domain]
    conflicts = _conflicts(host, accepted, stored, mine, elsewhere, old)
    record = [
        _entry(name, domains.get(name, {}), accepted.get(name, []), unmanaged, refused)
        for name in sorted(set(domains) | set(units) | set(unmanaged))
    ]
    for entry in record:
        entry["conflict"] = conflicts.get(entry["domain"])
    pending = record + [
        {"domain": e["domain"], "pending": True, "documents": e.get("documents") or []} for e in old
    ]
    return Outcome(
        puts,
        deletes,
        refused,
        [conflicts[k] for k in sorted(conflicts)],
        pending,
        record,
        _message(host, puts, deletes, stored),
    )


def _changes(
    host: str,
    accepted: Mapping[str, list[Document]],
    stored: Mapping[DocKey, Document],
    mine: Mapping[DocKey, set[str]],
) -> tuple[list[Document], list[DocKey], dict[int, str]]:
    puts: list[Document] = []
    sources: dict[int, str] = {}  # id(put) -> its domain
    reported: set[DocKey] = set()
    for domain, docs in accepted.items():
        for doc in docs:
            key = DocKey.of(doc)
            reported.add(key)
            if key not in stored or canonical(stored[key]) != canonical(doc):
                puts.append(doc)
                sources[id(doc)] = domain
    deletes = [
        key
        for key in sorted(mine, key=DocKey.sort_key)
        if key not in reported and key in stored and _still_here(host, key, stored)
    ]
    return puts, deletes, sources


def _still_here(host: str, key: DocKey, stored: Mapping[DocKey, Document]) -> bool:
    """Whether a stored document of this host's earlier reports is still this host's: its
    Workload (for a `vm-X` Policy: Workload X, or none left) is placed on this host."""
    if key.kind == "Policy":
        workload = stored.get(DocKey("Workload", key.tenant, key.name.removeprefix("vm-")))
        return workload is None or bool(placement(workload)[0] == host)
    return bool(placement(stored[key])[0] == host)


def _refusals(
    host: str,
    state: CatalogState,
    puts: list[Document],
    deletes: list[DocKey],
    sources: Mapping[int, str],
) -> dict[str, str]:
    """The domains whose documents do not validate with the rest, and why; empty if the
    change validates."""

    def check(chosen: list[Document]) -> Sequence[Issue]:
        numbered: dict[str, int] = {}
        pairs = []
        for doc in chosen:
            domain = sources[id(doc)]
            numbered[domain] = numbered.get(domain, 0) + 1
            pairs.append((doc, _domain_source(host, domain, numbered[domain])))
        try:
            state.change(pairs, [state_key(k) for k in deletes], stored_source)
        except DocumentsInvalid as exc:
            return exc.issues
        return ()

    issues = check(puts)
    if not issues:
        return {}
    if not puts:  # deletes alone never fail with absent_workloads; if they do, refuse all
        raise BadRequest([i.to_json() for i in issues])
    blamed: dict[str, list[Issue]] = {}
    for domain in set(sources.values()):
        prefix = _domain_source(host, domain, 0).file
        found = [i for i in issues if i.source.file == prefix]
        if found:
            blamed[domain] = found
    if not blamed:  # the issues name stored documents: find the domains that fail alone
        for domain in sorted(set(sources.values())):
            alone = check([doc for doc in puts if sources[id(doc)] == domain])
            if alone:
                blamed[domain] = list(alone)
    if not blamed:  # only together: fail closed for all of them
        blamed = {domain: list(issues) for domain in set(sources.values())}
    return {domain: "; ".join(_why(i) for i in found) for domain, found in blamed.items()}


def _why(issue: Issue) -> str:
    expected = f" (expected {issue.expected})" if issue.expected else ""
    where = f"{issue.path}: " if issue.path else ""
    return f"{where}{issue.message}{expected}"


def _conflicts(
    host: str,
    accepted: Mapping[str, list[Document]],
    stored: Mapping[DocKey, Document],
    mine: Mapping[DocKey, set[str]],
    elsewhere: Mapping[DocKey, set[str]],
    old: Record,
) -> dict[str, dict[str, Any]]:
    """Per domain: the declared Workload it replaced whose host or addresses differ, fresh
    (the stored one was written by no discovering host) or carried from the last record
    (the stored one is still what this host reported) until the two agree."""
    before = {e["domain"]: e.get("conflict") for e in old if e.get("conflict")}
    out: dict[str, dict[str, Any]] = {}
    for domain, docs in accepted.items():
        workload = docs[0]
        key = DocKey.of(workload)
        found = _placement_json(workload)
        current = stored.get(key)
        if current is None:
            continue
        seen = digest(current)
        if seen in mine.get(key, set()):
            carried = before.get(domain)
            if carried is not None and carried["declared"] != found:
                out[domain] = {**carried, "discovered": found}
        elif seen not in elsewhere.get(key, set()):
            declared = _placement_json(current)
            if declared != found:
                name = f"{key.tenant}/{key.name}" if key.tenant else key.name
                out[domain] = {
                    "workload": name,
                    "declared": declared,
                    "discovered": found,
                    "winner": "discovered",
                }
    return out


def _entry(
    name: str,
    info: Mapping[str, Any],
    docs: list[Document],
    unmanaged: Mapping[str, str],
    refused: Mapping[str, str],
) -> dict[str, Any]:
    reason = unmanaged.get(name)
    if name in refused:
        reason = f"refused by the manager: {refused[name]}"
    documents = []
    for doc in docs:
        key = DocKey.of(doc)
        documents.append([key.kind, key.tenant, key.name, digest(doc)])
    return {
        "domain": name,
        "state": info.get("state"),
        "taps": list(info.get("taps") or []),
        "managed": reason is None and bool(docs),
        "reason": reason,
        "documents": documents,
    }


def _message(
    host: str, puts: list[Document], deletes: list[DocKey], stored: Mapping[DocKey, Document]
) -> str:
    """`discovered on hv1: +web-1 ~db-1 -old-1`, by domain."""
    marks: dict[str, str] = {}
    for doc in puts:
        key = DocKey.of(doc)
        domain = key.name.removeprefix("vm-") if key.kind == "Policy" else key.name
        new = key.kind == "Workload" and key not in stored
        marks[domain] = "+" if new or marks.get(domain) == "+" else "~"
    for key in deletes:
        domain = key.name.removeprefix("vm-") if key.kind == "Policy" else key.name
        marks[domain] = "-" if key.kind == "Workload" else marks.get(domain, "~")
    return f"discovered on {host}: " + " ".join(f"{m}{d}" for d, m in sorted(marks.items()))


def discovered_status(record: Any) -> dict[str, Any]:
    """What `status` shows of a host's record: its conflicts, and its unmanaged or refused
    domains with the reason."""
    entries = _record_of({"": record}, "")
    return {
        "conflicts": [e["conflict"] for e in entries if e.get("conflict")],
        "unmanaged": {
            e["domain"]: e["reason"]
            for e in entries
            if not e.get("pending") and e.get("reason") is not None
        },
    }
