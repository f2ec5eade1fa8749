"""Audit endpoints: `GET /v1/audit` (ledger records), `GET /v1/audit/verify` (the chain
recomputed against the store) and `GET /v1/audit/report` (a compliance report's content).
Readers only: provider-admin, tenant-admin (filtered, see
`manager.audit`), auditor."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from hyperwall.manager import audit
from hyperwall.manager.auth import AUDITOR, PROVIDER_ADMIN, TENANT_ADMIN
from hyperwall.manager.deps import Mgr, Who
from hyperwall.manager.report import build_report
from hyperwall.manager_api import AuditRecord, AuditVerification, ErrorBody, ReportBody

router = APIRouter(prefix="/v1/audit", tags=["audit"])

READERS = (PROVIDER_ADMIN, TENANT_ADMIN, AUDITOR)
MAX_REVISION = 2**62


@router.get("", response_model=list[AuditRecord])
async def records(
    who: Who,
    manager: Mgr,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    before: Annotated[int | None, Query(ge=1, le=MAX_REVISION)] = None,
) -> list[dict[str, Any]]:
    """Ledger records the caller may see, newest first: actor, time, message, the digests
    of the documents each revision changed, and the hash chain."""
    who.require(READERS, "read the audit ledger")
    return await audit.records(manager.store, who, limit, before)


@router.get("/verify", response_model=AuditVerification)
async def verify(who: Who, manager: Mgr) -> dict[str, Any]:
    """Recompute the chain and check the stored revisions and documents against it; names
    the first altered record (also after edits made directly in SQLite or etcd)."""
    who.require(READERS, "verify the audit ledger")
    return await audit.verification(manager.store, who)


@router.get("/report", response_model=ReportBody, responses={404: {"model": ErrorBody}})
async def report(
    who: Who,
    manager: Mgr,
    tenant: Annotated[str | None, Query(max_length=63, description="none: the fleet")] = None,
    lint: Annotated[bool, Query(description="include lint (slow on large fleets)")] = True,
) -> dict[str, Any]:
    """The compliance report's content: each assertion's result with its deciding rules,
    the history of the documents those rest on, the tenant's reachability matrix, its
    groups that select nothing, and the ledger's verification (`hyperwall report`)."""
    who.require(READERS, "read compliance reports")
    return await build_report(manager, who, tenant, lint)
