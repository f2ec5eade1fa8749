"""Flow endpoints: agents ship records (`POST /v1/agent/{host}/flows`), people and tools
read them (`GET /v1/flows`) under the documents' RBAC: a tenant-admin sees only the records
of its own tenant's workloads, provider-admin and auditor see all, agents none.

Counterparts: `flow_store` (SQLite, retention, backpressure), `flows.filter` (the
predicate), `flows.api` (the bodies), the agent's `flows.shipper`.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from hyperwall.flows.api import FlowBatch, FlowBatchResult, FlowsPage
from hyperwall.flows.batch import record_problem
from hyperwall.flows.filter import MAX_FILTER, FlowFilter, parse_when
from hyperwall.manager.auth import AUDITOR, PROVIDER_ADMIN, TENANT_ADMIN, Refused
from hyperwall.manager.deps import Who
from hyperwall.manager.documents import request_error
from hyperwall.manager.flow_store import Busy, FlowStore
from hyperwall.manager_api import ErrorBody

router = APIRouter(prefix="/v1", tags=["flows"])
MAX_PAGE = 10_000
Filter = Annotated[str | None, Query(max_length=MAX_FILTER)]
NO_STORE = "this manager keeps no flow records (start it with --flows PATH)"

UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "no flow store, or the store is unreachable"}
}


def flow_store(request: Request) -> FlowStore:
    store = getattr(request.app.state, "flows", None)
    if not isinstance(store, FlowStore):
        raise Refused(503, NO_STORE)
    return store


@router.post(
    "/agent/{host}/flows",
    response_model=FlowBatchResult,
    responses={
        429: {"model": ErrorBody, "description": "the flow store is busy: retry later"},
        **UNAVAILABLE,
    },
)
async def ship(host: str, body: FlowBatch, who: Who, request: Request) -> Any:
    """Store a batch of the host's flow records, once: a batch the manager already has
    (same file, starting before where the host's shipping stands) is not stored again, and
    the answer says where the agent goes on from."""
    who.require_agent_of(host)
    if body.end < body.offset:
        raise request_error("before offset", "end")
    for i, record in enumerate(body.records):
        problem = record_problem(record, host)
        if problem is not None:
            field, why = problem
            raise request_error(why, f"records[{i}].{field}" if field else f"records[{i}]")
    store = flow_store(request)
    try:
        done = await store.store_batch(host, body.file, body.offset, body.end, body.records)
    except Busy as exc:
        return JSONResponse({"error": str(exc)}, status_code=429, headers={"Retry-After": "1"})
    return {"stored": done.stored, "file": done.position.file, "offset": done.position.offset}


@router.get("/flows", response_model=FlowsPage, responses=UNAVAILABLE)
async def flows(
    who: Who,
    request: Request,
    tenant: Annotated[
        str | None, Query(max_length=63, description="tenant name; '-' = provider workloads")
    ] = None,
    workload: Filter = None,
    rule: Filter = None,
    action: Annotated[str | None, Query(max_length=32)] = None,
    since: Annotated[str | None, Query(max_length=64, description="10m, 2h, or a time")] = None,
    until: Annotated[str | None, Query(max_length=64, description="10m, 2h, or a time")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    after: Annotated[int | None, Query(ge=0, le=2**62, description="a page's cursor")] = None,
) -> dict[str, Any]:
    """Flow records the caller may see, filtered (`flows.filter`). Without `after`: the
    newest `limit`, oldest first; with `after` (a previous answer's `cursor`): the records
    stored since, in the order they arrived (`hyperwall logs --follow`)."""
    who.require((PROVIDER_ADMIN, TENANT_ADMIN, AUDITOR), "read flow records")
    now = int(time.time() * 1_000_000)
    bounds: list[int | None] = []
    for name, text in (("since", since), ("until", until)):
        try:
            bounds.append(None if text is None else parse_when(text, now))
        except ValueError as exc:
            raise request_error(str(exc), name) from None
    flt = FlowFilter(tenant, workload, rule, action, bounds[0], bounds[1])
    if who.role == TENANT_ADMIN:
        narrowed = flt.within_tenant(who.tenant or "")
        if narrowed is None:
            raise Refused(
                403, f"tenant-admin of {who.tenant!r} may not read flow records of {tenant!r}"
            )
        flt = narrowed
    page = await flow_store(request).query(flt, limit, after)
    return {"records": page.records, "cursor": page.cursor}
