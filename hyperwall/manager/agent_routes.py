"""Agent endpoints: desired documents (long-poll), status and inventory reports.

An agent token of host H may use only `/v1/agent/H/*` (provider-admin may use all).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from hyperwall.manager.deps import Mgr, Who
from hyperwall.manager.schemas import AgentInventory, AgentStatus, DocumentsBody
from hyperwall.manager.service import MAX_WAIT

router = APIRouter(prefix="/v1/agent/{host}", tags=["agent"])


@router.get(
    "/desired",
    response_model=DocumentsBody,
    responses={204: {"description": "no revision after `after` within `wait` seconds"}},
)
async def desired(
    host: str,
    who: Who,
    manager: Mgr,
    after: Annotated[int, Query(ge=-1, le=2**62, description="the revision the agent has")] = 0,
    wait: Annotated[
        float,
        Query(ge=0, allow_inf_nan=False, description=f"seconds to wait (at most {MAX_WAIT})"),
    ] = 0,
) -> Any:
    """All current documents as soon as the current revision is above `after`
    (immediately if it already is); 204 after `wait` seconds otherwise."""
    who.require_agent_of(host)
    if not await manager.wait_after(after, wait):
        return Response(status_code=204)
    snap = await manager.store.snapshot()
    docs = [snap.documents[k] for k in sorted(snap.documents, key=lambda k: k.sort_key())]
    return {"revision": snap.revision, "documents": docs}


@router.put("/status", status_code=204, response_class=Response)
async def put_status(host: str, body: AgentStatus, who: Who, manager: Mgr) -> None:
    """The agent's realization report: revision, program hash, converged, error."""
    who.require_agent_of(host)
    await manager.report(host, body.model_dump())


@router.put("/inventory", status_code=204, response_class=Response)
async def put_inventory(host: str, body: AgentInventory, who: Who, manager: Mgr) -> None:
    """The Workload documents the agent discovered on its host (stored, not revisioned)."""
    who.require_agent_of(host)
    await manager.store.put_inventory(host, body.workloads)
