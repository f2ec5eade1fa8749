"""Request and response bodies of the manager's HTTP API: the contract between the server
(`hyperwall.manager`, where they make the OpenAPI document) and its client
(`hyperwall.client`, which returns them). Pydantic models only: no server code, so the client
imports this without importing the manager."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# Limits of request bodies (docs/design/manager.md, "Limits and abuse"). Every string in a
# body is also bounded by `policy.values.MAX_STRING` (4096) before it reaches a model.
MAX_DOCUMENTS = 25_000  # documents per request; the 10,000-workload benchmark fleet: 12,061
MAX_MESSAGE = 1024  # characters of a revision message
MAX_ERROR = 4096  # characters of an agent's error report
MAX_DOMAINS = 10_000  # domains in one discovery report, workloads in one inventory
MAX_EXPIRY = 10 * 365 * 86400  # seconds: a token expires at most ten years after creation

MESSAGE_HELP = f"the revision's message, at most {MAX_MESSAGE} characters"


class _Request(BaseModel):
    """A request body: strict types (`0` is not `false`), no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")


class ApplyRequest(_Request):
    documents: list[dict[str, Any]] = Field(
        max_length=MAX_DOCUMENTS, description="documents shaped as docs/policy.md"
    )
    message: str = Field("", max_length=MAX_MESSAGE, description=MESSAGE_HELP)
    dryRun: bool = False


class DiffRequest(_Request):
    documents: list[dict[str, Any]] = Field(max_length=MAX_DOCUMENTS)


class RollbackRequest(_Request):
    message: str | None = Field(None, max_length=MAX_MESSAGE, description=MESSAGE_HELP)


class TokenRequest(_Request):
    role: str = Field(description="provider-admin, tenant-admin, auditor or agent")
    tenant: str | None = Field(None, description="an existing Tenant (tenant-admin only)")
    host: str | None = Field(None, description="a host name (agent only)")
    expiresIn: int | None = Field(
        None, ge=1, le=MAX_EXPIRY, description="seconds until the token expires; none: never"
    )


class AgentStatus(_Request):
    revision: int = Field(ge=-1, le=2**62)
    programHash: str | None = Field(None, max_length=64)
    converged: bool
    error: str | None = Field(None, max_length=MAX_ERROR)
    endpoints: int = Field(0, ge=0, le=2**31)


class AgentInventory(_Request):
    workloads: list[dict[str, Any]] = Field(max_length=MAX_DOMAINS)


class DiscoveredTap(_Request):
    mac: str = Field(max_length=64)
    dev: str | None = Field(None, max_length=64)
    type: str = Field("", max_length=64)


class DiscoveredDomain(_Request):
    state: str = Field(max_length=64, description="running or shut off")
    managed: bool = Field(description="whether the agent found valid hyperwall metadata")
    taps: list[DiscoveredTap] = Field([], max_length=64)


class DiscoveredReport(_Request):
    """What an agent with `--libvirt` found on its host (docs/design/manager.md)."""

    documents: list[dict[str, Any]] = Field(
        max_length=MAX_DOCUMENTS,
        description="the running managed domains' Workloads (spec.host = this host) and their"
        " embedded Policies vm-DOMAIN",
    )
    domains: dict[str, DiscoveredDomain] = Field(
        {}, max_length=MAX_DOMAINS, description="every domain, by name"
    )
    unmanaged: dict[str, str] = Field(
        {}, max_length=MAX_DOMAINS, description="domain -> why it is unmanaged"
    )


class DiscoveredResult(BaseModel):
    revision: int = Field(description="the new revision, or the current one if unchanged")
    created: bool
    message: str
    refused: dict[str, str] = Field(description="domain -> why its documents were refused")
    conflicts: list[dict[str, Any]] = Field(
        description="declared Workloads replaced by a discovered one with another host or"
        " other addresses"
    )


class ErrorBody(BaseModel):
    error: str


class IssuesBody(BaseModel):
    errors: list[dict[str, Any]]


class DocumentsBody(BaseModel):
    revision: int
    documents: list[dict[str, Any]]


class DesiredBody(BaseModel):
    """A host's program at `revision`: whole (`program`) or as the change (`delta`) from
    the program whose digest the agent sent (`base`); `digest` is the result's digest."""

    revision: int = Field(description="the revision the program is current at")
    programRevision: int = Field(description="the revision where the host's program changed last")
    digest: str = Field(description="digest of the host's program (32 hex digits)")
    base: str | None = Field(None, description="the digest `delta` applies to")
    program: dict[str, Any] | None = Field(None, description="the whole program (wire format)")
    delta: dict[str, Any] | None = Field(None, description="the change from `base`")


class ApplyResult(BaseModel):
    revision: int = Field(description="the new revision, or the current one if unchanged")
    created: bool = Field(description="false: the set was identical, no revision was made")
    dryRun: bool = False
    baseRevision: int
    changes: list[dict[str, Any]]
    hostsChanged: list[str]
    assertions: dict[str, Any] = Field(
        default_factory=dict,
        description="the assertions the change touches, re-checked: checked (names) and broken"
        " (name, holds, counterexample)",
    )


class DiffResult(BaseModel):
    baseRevision: int
    changes: list[dict[str, Any]]
    hostsChanged: list[str]
    assertions: dict[str, Any] = Field(
        default_factory=dict,
        description="the assertions the change touches, re-checked: checked (names) and broken"
        " (name, holds, counterexample)",
    )


class RevisionHeader(BaseModel):
    revision: int
    author: str
    time: float
    message: str
    added: list[dict[str, Any]]
    changed: list[dict[str, Any]]
    removed: list[dict[str, Any]]


class RevisionDetail(RevisionHeader):
    changes: list[dict[str, Any]]


class RollbackResult(BaseModel):
    revision: int
    created: bool
    hostsChanged: list[str]


class HostStatus(BaseModel):
    host: str
    state: str = Field(description="in-sync, pending, error or unreachable")
    expectedHash: str | None
    revision: int | None
    programHash: str | None
    converged: bool
    error: str | None
    endpoints: int
    reported: float | None
    conflicts: list[dict[str, Any]] = Field(
        [], description="declared Workloads that disagree with what this host discovered"
    )
    unmanaged: dict[str, str] = Field(
        {}, description="domains of this host that are not enforced (unmanaged or refused)"
    )


class StatusBody(BaseModel):
    revision: int
    hosts: list[HostStatus]


class TokenInfo(BaseModel):
    """A stored token as listed: never its secret or its hash."""

    id: str
    role: str
    tenant: str | None
    host: str | None
    created: float = Field(description="creation time, seconds since the epoch (manager clock)")
    expires: float | None = Field(
        None, description="expiry time, seconds since the epoch; none: never expires"
    )


class TokenCreated(TokenInfo):
    token: str = Field(description="the secret; shown only now, stored hashed")


class AuditRecord(BaseModel):
    """One audit-ledger record as the caller may see it (`docs/design/audit.md`)."""

    revision: int
    time: float = Field(description="commit time, seconds since the epoch (manager clock)")
    author: str
    actor: dict[str, str | None] = Field(description="token, role and scope (tenant or host)")
    message: str
    changes: list[dict[str, Any]] = Field(
        description="kind, tenant, name, action and SHA-256 of the document before/after"
    )
    hiddenChanges: int = Field(0, description="changes of other tenants' documents, left out")
    prev: str = Field(description="hash of the previous record (64 zeros for the first)")
    hash: str = Field(description="SHA-256 of this record's stored text")


class AuditFinding(BaseModel):
    record: int
    problem: str


class AuditVerification(BaseModel):
    intact: bool
    records: int
    start: int | None = Field(description="the first record (1 unless the ledger began later)")
    head: int | None
    headHash: str | None = Field(description="compare with an anchored copy (the manager log)")
    firstAltered: int | None
    findings: list[AuditFinding]


class ReportBody(BaseModel):
    """What `hyperwall report` renders (`manager.report`, `docs/design/audit.md`)."""

    tenant: str | None = Field(description="the tenant reported on; none: the whole fleet")
    revision: int
    generated: float = Field(description="seconds since the epoch (manager clock)")
    ledger: AuditVerification = Field(description="the audit ledger's verification now")
    assertions: list[dict[str, Any]] = Field(
        description="name, description, expect, from, to, services, holds, evidence"
        " (deciding rules), counterexample"
    )
    groups: list[str] = Field(description="the reachability matrix's rows and columns")
    matrix: list[list[dict[str, Any]]] = Field(
        description="[source][destination]: reach, an example connection, deciding rules"
    )
    groupsLeftOut: int
    history: list[dict[str, Any]] = Field(
        description="per document the verdicts rest on: its ledger records (who, when, what)"
    )
    lint: list[dict[str, Any]] | None = Field(
        description="`hyperwall lint` findings of the scope's rules and groups: kind"
        " (unmatched, shadowed, redundant, pass-nothing, empty-group), subject, by;"
        " none: left out (`lint=false`)"
    )
