"""Migration endpoints: begin, list and end a workload's move to another host.

`POST /v1/migrations {"workload", "tenant", "to"}` begins a move: until it ends, the
destination's agent is served the program with the workload placed on it
(`manager.moves`), so the VM is enforced there before it runs there. `DELETE
/v1/migrations?workload=W&tenant=T` ends it (after the Workload's new `spec.host` is
applied). Who may write the workload's documents may move it (the move ends in a change of
its `spec.host`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from hyperwall.manager.auth import Principal, Refused
from hyperwall.manager.deps import Mgr, Who
from hyperwall.manager.documents import request_error
from hyperwall.manager.moves import Move
from hyperwall.manager_api import ErrorBody
from hyperwall.policy.model import object_key

router = APIRouter(prefix="/v1/migrations", tags=["migrations"])

NAME = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$"
_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorBody, "description": "the caller may not change this workload"},
    404: {"model": ErrorBody, "description": "no such workload, or no such move"},
}


class MoveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workload: str = Field(max_length=63, pattern=NAME, description="the Workload's name")
    tenant: str | None = Field(None, max_length=63, pattern=NAME, description="its tenant")
    to: str = Field(max_length=63, pattern=NAME, description="the destination host")


class MoveBody(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    workload: str = Field(description="the workload's key (tenant/name)")
    source: str = Field(alias="from", description="the host it left")
    to: str


def _move_json(move: Move) -> dict[str, Any]:
    return {"workload": move.workload, "from": move.source, "to": move.dest}


def _check(who: Principal, tenant: str | None) -> None:
    refusal = who.write_refusal(tenant)
    if refusal is not None:
        raise Refused(403, refusal)


@router.post("", response_model=MoveBody, responses=_ERRORS)
async def begin(body: MoveRequest, who: Who, manager: Mgr) -> Any:
    """Begin moving a workload to host `to`: the destination is served its rules now."""
    _check(who, body.tenant)
    key = object_key(body.tenant, body.workload)
    _, _, catalog = await manager.current_catalog()
    workload = catalog.workloads.get(key)
    if workload is None:
        raise Refused(404, f"no Workload {key!r}")
    if workload.host == body.to:
        raise request_error(f"{key} already runs on {body.to}", "to", "another host")
    move = Move(key, workload.host, body.to)
    manager.fleet.moves.begin(move)
    await manager.fleet.poke()
    return _move_json(move)


@router.get("", response_model=list[MoveBody])
async def moves(who: Who, manager: Mgr) -> Any:
    """The moves in progress that the caller may see."""
    visible = [
        m
        for m in list(manager.fleet.moves.moves.values())
        if who.can_see(m.workload.split("/")[0] if "/" in m.workload else None)
    ]
    return [_move_json(m) for m in visible]


@router.delete("", status_code=204, response_class=Response, responses=_ERRORS)
async def end(
    who: Who,
    manager: Mgr,
    workload: Annotated[str, Query(max_length=63, pattern=NAME)],
    tenant: Annotated[str | None, Query(max_length=63, pattern=NAME)] = None,
) -> None:
    """End a workload's move: the destination is served the ordinary program again."""
    _check(who, tenant)
    key = object_key(tenant, workload)
    if manager.fleet.moves.end(key) is None:
        raise Refused(404, f"no move of {key!r} in progress")
    await manager.fleet.poke()
