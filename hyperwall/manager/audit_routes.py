"""Audit endpoints: `GET /v1/audit` (ledger records) and `GET /v1/audit/verify` (the chain
recomputed against the store). Readers only: provider-admin, tenant-admin (filtered, see
`manager.audit`), auditor."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from hyperwall.manager import audit
from hyperwall.manager.auth import AUDITOR, PROVIDER_ADMIN, TENANT_ADMIN
from hyperwall.manager.deps import Mgr, Who
from hyperwall.manager_api import AuditRecord, AuditVerification

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
