"""Request and response bodies of the manager's HTTP API: the contract between the server
(`hyperwall.manager`, where they make the OpenAPI document) and its client
(`hyperwall.client`, which returns them). Pydantic models only: no server code, so the client
imports this without importing the manager."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ApplyRequest(BaseModel):
    documents: list[dict[str, Any]] = Field(description="documents shaped as docs/policy.md")
    message: str = ""
    dryRun: bool = False


class DiffRequest(BaseModel):
    documents: list[dict[str, Any]]


class RollbackRequest(BaseModel):
    message: str | None = None


class TokenRequest(BaseModel):
    role: str = Field(description="provider-admin, tenant-admin, auditor or agent")
    tenant: str | None = None
    host: str | None = None


class AgentStatus(BaseModel):
    revision: int
    programHash: str | None = None
    converged: bool
    error: str | None = None
    endpoints: int = 0


class AgentInventory(BaseModel):
    workloads: list[dict[str, Any]]


class DiscoveredTap(BaseModel):
    mac: str
    dev: str | None = None
    type: str = ""


class DiscoveredDomain(BaseModel):
    state: str = Field(description="running or shut off")
    managed: bool = Field(description="whether the agent found valid hyperwall metadata")
    taps: list[DiscoveredTap] = []


class DiscoveredReport(BaseModel):
    """What an agent with `--libvirt` found on its host (docs/design/manager.md)."""

    documents: list[dict[str, Any]] = Field(
        description="the running managed domains' Workloads (spec.host = this host) and their"
        " embedded Policies vm-DOMAIN"
    )
    domains: dict[str, DiscoveredDomain] = Field({}, description="every domain, by name")
    unmanaged: dict[str, str] = Field({}, description="domain -> why it is unmanaged")


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


class DiffResult(BaseModel):
    baseRevision: int
    changes: list[dict[str, Any]]
    hostsChanged: list[str]


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


class TokenCreated(TokenInfo):
    token: str = Field(description="the secret; shown only now, stored hashed")
