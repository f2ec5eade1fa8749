"""Live traces in flight: the queue of trace work the agents poll, and the answers they post.

The manager cannot connect to agents, so a live trace (`trace_routes`) is a job on this
board: every host that enforces an end of the probe gets an `arm` task (set the trace rule,
start listening); when all of them have said `armed`, the host that injects (the source
workload's, or for an external source the destination's) gets an `inject` task; each
armed host posts its `result` (the kernel's hits at its ends) when its part of the probe
has been decided or its deadline passed. The job is done when every armed host has
answered, or when the sender's end denied the probe (the receiver's host will not see it;
its agent removes its trace rule at its own deadline), or at the job's deadline.

In memory, one manager: a trace is a short diagnostic, not state worth a store. If the
manager restarts, the request in flight fails and the agents' trace rules expire at their
deadline (`docs/design/livetrace.md`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

AGENT_MARGIN = 1.5  # seconds
MAX_TASKS_PER_HOST = 64  # bounded: a host whose agent is away does not collect work forever
REDELIVER = 1.0  # seconds before a task not acknowledged is delivered again


@dataclass
class TraceJob:
    id: str
    probe: dict[str, Any]
    hosts: dict[str, list[str]]  # host -> the ends it enforces ("egress", "ingress")
    injector: str  # the host that sends the probe
    inject: dict[str, Any]  # where: {"endpoint": KEY} or {"route": True}
    deadline: float  # time.monotonic()
    armed: set[str] = field(default_factory=set)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def finished(self) -> bool:
        if set(self.results) >= set(self.hosts):
            return True
        sender = self.results.get(self.injector)
        if sender is None:
            return False
        hits = {h["end"]: h for h in sender.get("hits", [])}
        egress = hits.get("egress")
        return egress is not None and egress["verdict"] != "allow"


class TraceBoard:
    """The jobs and the per-host task queues (one event loop: no locks needed)."""

    def __init__(self) -> None:
        self.jobs: dict[str, TraceJob] = {}
        self.tasks: dict[str, list[dict[str, Any]]] = {}
        self.wakeup: dict[str, asyncio.Event] = {}
        self.sent: dict[int, float] = {}  # id() of a queued task -> when it was last delivered

    def _push(self, host: str, task: dict[str, Any]) -> None:
        queue = self.tasks.setdefault(host, [])
        for old in queue[: max(0, len(queue) - MAX_TASKS_PER_HOST + 1)]:
            queue.remove(old)
            self.sent.pop(id(old), None)
        queue.append(task)
        self.wakeup.setdefault(host, asyncio.Event()).set()

    def start(self, job: TraceJob) -> None:
        self.jobs[job.id] = job
        # the agents give up a little before the job does, so their "not seen" still counts
        seconds = max(0.5, job.deadline - time.monotonic() - AGENT_MARGIN)
        for host, ends in job.hosts.items():
            self._push(
                host,
                {
                    "id": job.id,
                    "action": "arm",
                    "probe": job.probe,
                    "ends": ends,
                    "seconds": seconds,
                },
            )

    async def next_tasks(self, host: str, wait: float) -> list[dict[str, Any]]:
        """The host's tasks not yet delivered (or delivered `REDELIVER` seconds ago and not
        yet acknowledged: the request that took them may have been a dead agent's), waiting
        up to `wait` seconds for one."""
        end = time.monotonic() + wait
        event = self.wakeup.setdefault(host, asyncio.Event())
        while True:
            now = time.monotonic()
            queue = self.tasks.get(host, [])
            queue[:] = [t for t in queue if t["id"] in self.jobs]
            due = [t for t in queue if self.sent.get(id(t), -REDELIVER) + REDELIVER <= now]
            if due:
                for t in due:
                    self.sent[id(t)] = now
                return [dict(t) for t in due]
            if now >= end:
                return []
            event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(end - now, REDELIVER))

    def _ack(self, host: str, trace_id: str, action: str) -> None:
        queue = self.tasks.get(host, [])
        for t in [t for t in queue if t["id"] == trace_id and t["action"] == action]:
            queue.remove(t)
            self.sent.pop(id(t), None)

    def armed(self, host: str, trace_id: str) -> None:
        job = self.jobs.get(trace_id)
        if job is None or host not in job.hosts:
            return
        self._ack(host, trace_id, "arm")
        job.armed.add(host)
        if job.armed == set(job.hosts):
            self._push(
                job.injector, {"id": job.id, "action": "inject", "probe": job.probe, **job.inject}
            )

    def result(self, host: str, trace_id: str, body: dict[str, Any]) -> None:
        job = self.jobs.get(trace_id)
        if job is None or host not in job.hosts:
            return
        self._ack(host, trace_id, "arm")
        self._ack(host, trace_id, "inject")
        job.results[host] = body
        if job.finished():
            job.done.set()

    async def wait(self, job: TraceJob) -> None:
        """Until the job is finished or its deadline passed; then it is forgotten."""
        try:
            await asyncio.wait_for(job.done.wait(), max(0.0, job.deadline - time.monotonic()))
        except TimeoutError:
            pass
        finally:
            self.jobs.pop(job.id, None)
            for host in job.hosts:
                self._ack(host, job.id, "arm")
                self._ack(host, job.id, "inject")
