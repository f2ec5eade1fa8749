"""Live trace endpoints (`hyperwall trace --live`), like NSX Traceflow.

- `POST /v1/traces` (provider-admin; tenant-admin for its own workloads): resolve the two
  ends and the service on the current revision, run the offline `trace`, put a job on the
  board (`manager.traces`), wait for the agents' answers (at most `timeout` seconds) and
  answer both side by side with every difference (`analysis.live.compare`).
- `GET /v1/agent/{host}/traces/desired?wait=S` (the host's agent): its trace tasks, a
  long-poll like `desired` (the path ends in `/desired`, so shutdown answers it 204 at once:
  `manager.drain`).
- `POST /v1/agent/{host}/traces/{id}/armed` and `.../result`: the agent's answers.
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from hyperwall.analysis.live import LiveEnd, compare
from hyperwall.analysis.trace import TraceInputError, TraceResult, trace
from hyperwall.manager.auth import PROVIDER_ADMIN, TENANT_ADMIN, Principal, Refused
from hyperwall.manager.deps import Mgr, Who
from hyperwall.manager.documents import request_error
from hyperwall.manager.service import MAX_WAIT
from hyperwall.manager.traces import TraceBoard, TraceJob

router = APIRouter(prefix="/v1", tags=["trace"])
agent_router = APIRouter(prefix="/v1/agent/{host}/traces", tags=["agent"])
MAX_TIMEOUT = 60.0
PROTOS = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}


class TraceRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True)

    source: str = Field(alias="from", max_length=256)
    destination: str = Field(alias="to", max_length=256)
    service: str = Field(max_length=256)
    timeout: float = Field(10.0, gt=0, le=MAX_TIMEOUT)


class AgentHit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    end: str = Field(pattern="^(egress|ingress)$")
    verdict: str = Field(max_length=16)
    rule: str = Field(max_length=1024)
    chain: str = Field("", max_length=64)
    handle: int | None = None


class AgentResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hits: list[AgentHit] = Field(default_factory=list, max_length=2)
    path: list[str] = Field(default_factory=list, max_length=256)
    error: str | None = Field(None, max_length=4096)


def board_of(request: Request) -> TraceBoard:
    board = getattr(request.app.state, "traces", None)
    if board is None:
        board = request.app.state.traces = TraceBoard()
    assert isinstance(board, TraceBoard)
    return board


def _check_rbac(who: Principal, result: TraceResult) -> None:
    """provider-admin: any probe; tenant-admin: only between its own workloads (and
    addresses that are not workloads); nobody else sends probes."""
    if who.role == PROVIDER_ADMIN:
        return
    if who.role != TENANT_ADMIN:
        raise Refused(403, f"role {who.role} may not run live traces")
    for end in (result.source, result.destination):
        if end.workload is not None and end.workload.tenant != who.tenant:
            raise Refused(
                403, f"tenant-admin of {who.tenant!r} may not trace workload {end.workload.key!r}"
            )


def _job(result: TraceResult, seconds: float) -> TraceJob:
    packet = result.packet
    proto = PROTOS[packet.proto]
    tag = (
        secrets.randbelow(28000) + 32768
        if proto in ("tcp", "udp")
        else secrets.randbelow(65535) + 1
    )
    probe = {"src": packet.src, "dst": packet.dst, "proto": proto, "port": packet.dport, "tag": tag}
    hosts: dict[str, list[str]] = {}
    for end, name in ((result.source, "egress"), (result.destination, "ingress")):
        if end.workload is not None:
            hosts.setdefault(end.workload.host, []).append(name)
    if result.source.workload is not None:
        injector = result.source.workload.host
        inject: dict[str, Any] = {"endpoint": result.source.endpoint_key}
    elif result.destination.workload is not None:
        injector = result.destination.workload.host
        inject = {"route": True}
    else:
        raise request_error("neither end is a managed workload: nothing to trace", "from")
    return TraceJob(
        secrets.token_hex(6), probe, hosts, injector, inject, time.monotonic() + seconds
    )


@router.post("/traces")
async def live_trace(body: TraceRequest, who: Who, manager: Mgr, request: Request) -> Any:
    """Send one real probe from `from` to `to` and report what each end's kernel decided,
    beside the offline `trace` on the current revision."""
    who.require((PROVIDER_ADMIN, TENANT_ADMIN), "run live traces")
    view = manager.fleet.tracker.view
    if view is None:
        raise request_error("no valid revision yet: nothing to trace")
    try:
        offline = trace(view.catalog, body.source, body.destination, body.service)
    except TraceInputError as exc:
        raise request_error(str(exc)) from None
    _check_rbac(who, offline)
    board = board_of(request)
    job = _job(offline, body.timeout)
    board.start(job)
    await board.wait(job)
    live: dict[str, LiveEnd] = {}
    hosts: dict[str, Any] = {}
    for host in job.hosts:
        answer = job.results.get(host)
        if answer is None:
            answer_missing = {"error": "no answer from its agent"}
            if job.finished():  # the sender denied the probe: this host was not waited for
                answer_missing = {"note": "not waited for: the sender's end denied the probe"}
            hosts[host] = answer_missing
        else:
            hosts[host] = answer
        for hit in (answer or {}).get("hits", []):
            live.setdefault(
                hit["end"],
                LiveEnd(hit["verdict"], hit["rule"], host, hit.get("chain", ""), hit.get("handle")),
            )
    comparison = compare(offline, live)
    missing = sorted(h for h in job.hosts if h not in job.results and not job.finished())
    return {
        **comparison.to_json(),
        "id": job.id,
        "probe": job.probe,
        "revision": view.revision,
        "hosts": hosts,
        "missing": missing,
    }


@agent_router.get(
    "/desired", responses={204: {"description": "no trace work within `wait` seconds"}}
)
async def trace_tasks(
    host: str,
    who: Who,
    request: Request,
    wait: Annotated[float, Query(ge=0, allow_inf_nan=False)] = 0,
) -> Any:
    """The host's trace tasks (arm, inject), as soon as there is one; 204 after `wait`."""
    who.require_agent_of(host)
    tasks = await board_of(request).next_tasks(host, min(wait, MAX_WAIT))
    if not tasks:
        return Response(status_code=204)
    return {"tasks": tasks}


@agent_router.post("/{trace_id}/armed", status_code=204, response_class=Response)
async def trace_armed(host: str, trace_id: str, who: Who, request: Request) -> None:
    """The host's trace rule is in place and its listener is open."""
    who.require_agent_of(host)
    board_of(request).armed(host, trace_id)


@agent_router.post("/{trace_id}/result", status_code=204, response_class=Response)
async def trace_result(
    host: str, trace_id: str, body: AgentResult, who: Who, request: Request
) -> None:
    """What the host's kernel decided at the ends it enforces."""
    who.require_agent_of(host)
    board_of(request).result(host, trace_id, body.model_dump())
