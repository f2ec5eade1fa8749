"""`GET /v1/reach`: the reachability matrix (`analysis.reach`) of the stored documents, at
the current revision, at `revision`, or what changed `between` two revisions.

RBAC as for reading documents (provider-admin, tenant-admin, auditor). The matrix is
computed over every document of the revision (a tenant's traffic is decided by provider
rules too), but a tenant-admin asks only about its own tenant: `tenant` is its own (or
absent, meaning its own), and `from`/`to` may name only its own groups and workloads, and
CIDRs (as its documents may). Computing is CPU work: on a worker thread.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query

from hyperwall.analysis.reach import (
    Side,
    reach,
    reach_diff,
    resolve_peer,
    resolve_services,
    sides,
)
from hyperwall.analysis.view import FleetView
from hyperwall.manager.auth import AUDITOR, PROVIDER_ADMIN, TENANT_ADMIN, Principal, Refused
from hyperwall.manager.catalogs import build_state
from hyperwall.manager.deps import Mgr, Who
from hyperwall.manager.documents import request_error
from hyperwall.manager_api import ErrorBody
from hyperwall.policy.errors import DocumentsInvalid
from hyperwall.policy.model import Catalog

router = APIRouter(prefix="/v1", tags=["analysis"])
READERS = (PROVIDER_ADMIN, TENANT_ADMIN, AUDITOR)
MAX_PEERS = 64
MAX_REVISION = 2**62


def _scope(who: Principal, tenant: str | None) -> str | None:
    if who.role == TENANT_ADMIN:
        if tenant not in (None, who.tenant):
            raise Refused(403, f"a tenant-admin of {who.tenant!r} may not ask about {tenant!r}")
        return who.tenant
    return tenant


def _sides(
    view: FleetView,
    peers: list[str],
    tenant: str | None,
    workloads: bool,
    what: str,
    who: Principal,
) -> list[Side]:
    for i, text in enumerate(peers):
        try:
            peer = resolve_peer(view.catalog, text, tenant)
        except ValueError as exc:
            raise request_error(str(exc), f"{what}[{i}]") from None
        foreign = not peer.value.startswith(f"{who.tenant}/")
        if who.role == TENANT_ADMIN and peer.kind in ("group", "workload") and foreign:
            raise Refused(403, f"{what}[{i}]: {peer.value!r} is not of tenant {who.tenant!r}")
    return sides(view, peers, tenant, workloads)


def _catalog(documents: dict[Any, Any]) -> Catalog:
    try:
        return build_state(documents).catalog
    except DocumentsInvalid as exc:
        raise request_error(f"the stored documents are invalid: {exc}") from None


def _matrix(
    catalog: Catalog,
    who: Principal,
    tenant: str | None,
    sources: list[str],
    targets: list[str],
    service: str | None,
    workloads: bool,
) -> Any:
    view = FleetView(catalog)
    rows = _sides(view, sources, tenant, workloads, "from", who)
    columns = _sides(view, targets, tenant, workloads, "to", who)
    try:
        services = resolve_services(catalog, service, tenant)
    except ValueError as exc:
        raise request_error(str(exc), "service") from None
    return reach(view, rows, columns, services)


@router.get(
    "/reach",
    responses={
        404: {"model": ErrorBody, "description": "no such revision"},
        410: {"model": ErrorBody, "description": "the revision was compacted"},
    },
)
async def reach_matrix(
    who: Who,
    manager: Mgr,
    sources: Annotated[list[str], Query(alias="from", max_length=MAX_PEERS)] = [],  # noqa: B006
    targets: Annotated[list[str], Query(alias="to", max_length=MAX_PEERS)] = [],  # noqa: B006
    service: Annotated[str | None, Query(max_length=256)] = None,
    tenant: Annotated[str | None, Query(max_length=63)] = None,
    workloads: bool = False,
    revision: Annotated[int | None, Query(ge=1, le=MAX_REVISION)] = None,
    between: Annotated[list[int], Query(max_length=2)] = [],  # noqa: B006
) -> dict[str, Any]:
    """Which groups (or workloads) reach which, on which services, by which rules; with
    `between=R1&between=R2`: what R2 opens and closes compared with R1."""
    who.require(READERS, "read reachability")
    scope = _scope(who, tenant)
    if between and len(between) != 2:
        raise request_error("between takes two revisions", "between")
    if between and revision is not None:
        raise request_error("give revision or between, not both", "revision")

    async def matrix_at(number: int | None) -> Any:
        snap = await manager.store.snapshot(number)
        catalog = await asyncio.to_thread(_catalog, snap.documents)
        found = await asyncio.to_thread(
            _matrix, catalog, who, scope, sources, targets, service, workloads
        )
        return snap.revision, found

    if between:
        (old_rev, old), (new_rev, new) = [await matrix_at(n) for n in between]
        changes = reach_diff(old, new)
        return {"between": [old_rev, new_rev], "changes": [c.to_json() for c in changes]}
    number, matrix = await matrix_at(revision)
    return {"revision": number, **matrix.to_json()}
