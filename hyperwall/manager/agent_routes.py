"""Agent endpoints: the host's program (long-poll), status and inventory reports, and the
workloads an agent discovered on its hypervisor (`discovery`).

An agent token of host H may use only `/v1/agent/H/*` (provider-admin may use all). An
agent receives its host's compiled program, never the document set: the whole program the
first time (or when the manager no longer keeps the version it has), afterwards the delta
from the program it holds (`have`: its digest).
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from hyperwall.compiler.delta import ProgramDelta
from hyperwall.compiler.digest import digest_text
from hyperwall.compiler.fleet_programs import HostVersion
from hyperwall.compiler.program_codec import delta_to_wire, program_to_wire
from hyperwall.manager.deps import Mgr, Who
from hyperwall.manager.fleetwatch import FleetWatch
from hyperwall.manager.metrics import metrics_of
from hyperwall.manager.service import MAX_WAIT
from hyperwall.manager_api import (
    AgentInventory,
    AgentStatus,
    DesiredBody,
    DiscoveredReport,
    DiscoveredResult,
)

router = APIRouter(prefix="/v1/agent/{host}", tags=["agent"])
DIGEST = re.compile(r"[0-9a-f]{32}")


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


@router.get(
    "/desired",
    response_model=DesiredBody,
    responses={204: {"description": "no revision after `after` within `wait` seconds"}},
)
async def desired(
    host: str,
    who: Who,
    manager: Mgr,
    after: Annotated[int, Query(ge=-1, le=2**62, description="the revision the agent has")] = -1,
    have: Annotated[
        str | None,
        Query(pattern=r"^[0-9a-f]{32}$", description="digest of the program the agent holds"),
    ] = None,
    wait: Annotated[
        float,
        Query(ge=0, allow_inf_nan=False, description=f"seconds to wait (at most {MAX_WAIT})"),
    ] = 0,
) -> Any:
    """The host's program as soon as the manager's programs are past revision `after`
    (immediately if they are, or if `have` is not the current digest); 204 after `wait`
    seconds otherwise."""
    who.require_agent_of(host)
    fleet = manager.fleet
    pokes = fleet.pokes
    current = await fleet.host_version(host)
    stale = have is not None and have != digest_text(current.digest)
    if not stale and not await fleet.wait_past(after, min(wait, MAX_WAIT), pokes):
        return Response(status_code=204)
    revision = fleet.revision
    base = int(have, 16) if have is not None and DIGEST.fullmatch(have) else None
    version, change = await _version(fleet, host, base)
    body: dict[str, Any] = {
        "revision": max(revision, 0),
        "programRevision": version.revision,
        "digest": digest_text(version.digest),
    }
    if change is not None:
        body.update(base=have, delta=delta_to_wire(change))
        return Response(content=_encode(body), media_type="application/json")
    cached = fleet.encoded.get(host)
    if cached is None or cached[0] != version.digest:  # once per program, not per request
        encoded = await asyncio.to_thread(_encode, program_to_wire(version.program))
        cached = fleet.encoded[host] = (version.digest, encoded)
    content = _encode(body)[:-1] + b',"program":' + cached[1] + b"}"
    return Response(content=content, media_type="application/json")


async def _version(
    fleet: FleetWatch, host: str, base: int | None
) -> tuple[HostVersion, ProgramDelta | None]:
    """The host's program and the delta to it from the kept version `base` (None: send
    the whole program). While workloads move to the host (`manager.moves`) the whole
    program, unless the agent holds it already."""
    if fleet.moves.into(host):
        version = await fleet.host_version(host)
        if base == version.digest:
            return version, ProgramDelta(host=host)
        return version, None
    if base is None:
        return fleet.programs.host(host), None
    return fleet.programs.since(host, base)


@router.put("/status", status_code=204, response_class=Response)
async def put_status(
    host: str, body: AgentStatus, who: Who, manager: Mgr, request: Request
) -> None:
    """The agent's realization report: revision, program hash, converged, error."""
    who.require_agent_of(host)
    report = body.model_dump()
    await manager.report(host, report)
    await metrics_of(request.app).reported(manager, host, report)


@router.put("/inventory", status_code=204, response_class=Response)
async def put_inventory(host: str, body: AgentInventory, who: Who, manager: Mgr) -> None:
    """The workloads the agent found on its host (stored, not revisioned)."""
    who.require_agent_of(host)
    await manager.store.put_inventory(host, body.workloads)


@router.put("/discovered", response_model=DiscoveredResult)
async def put_discovered(
    host: str, body: DiscoveredReport, who: Who, manager: Mgr
) -> dict[str, Any]:
    """The host's running managed domains as documents, committed as one revision authored
    by the agent; the domains refused (not valid with the rest) are listed, not committed."""
    return await manager.discovered(who, host, body)
