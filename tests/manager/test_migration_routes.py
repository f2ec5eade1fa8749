"""`/v1/migrations`: while a workload moves, its destination's agent is served the program
with it placed there (woken from its long-poll), the source keeps the ordinary one; ending
the move gives the destination the ordinary program again. Refusals name what is wrong."""

from __future__ import annotations

import threading
from typing import Any

import httpx

from hyperwall.compiler.program_codec import program_from_wire
from tests.manager.conftest import Live, example_documents
from tests.manager.support import call

DB = {"workload": "db-1", "tenant": "acme"}


def workloads(answer: httpx.Response) -> set[str]:
    assert answer.status_code == 200, answer.text
    program = program_from_wire(answer.json()["program"])
    return {ep.workload for ep in program.endpoints.values()}


def test_a_move_places_the_vm_on_its_destination_until_it_ends(live_sqlite: Live) -> None:
    live = live_sqlite
    call(live.url, live.admin, "POST", "/v1/apply", {"documents": example_documents()})
    tokens = {
        h: call(live.url, live.admin, "POST", "/v1/tokens", {"role": "agent", "host": h}).json()[
            "token"
        ]
        for h in ("hv1", "hv2")
    }

    def desired(host: str, **params: Any) -> httpx.Response:
        return call(live.url, tokens[host], "GET", f"/v1/agent/{host}/desired", **params)

    before = desired("hv1", after=-1)
    assert "acme/db-1" not in workloads(before)
    revision, digest = before.json()["revision"], before.json()["digest"]
    answers: list[httpx.Response] = []
    # hv1's agent waits for news; the move is news without a new revision
    poll = threading.Thread(
        target=lambda: answers.append(desired("hv1", after=revision, have=digest, wait=30))
    )
    poll.start()
    begun = call(live.url, live.admin, "POST", "/v1/migrations", {**DB, "to": "hv1"})
    poll.join()
    assert begun.status_code == 200, begun.text
    assert begun.json() == {"workload": "acme/db-1", "from": "hv2", "to": "hv1"}
    assert "acme/db-1" in workloads(answers[0])  # woken by the move, the VM's rules in it
    assert answers[0].json()["revision"] == revision
    assert "acme/db-1" in workloads(desired("hv2", after=-1))  # the source keeps it
    moving = answers[0].json()["digest"]
    held = desired("hv1", after=revision, have=moving, wait=0.2)
    assert held.status_code == 204  # nothing new for an agent that has the moving program
    listed = call(live.url, live.admin, "GET", "/v1/migrations").json()
    assert listed == [{"workload": "acme/db-1", "from": "hv2", "to": "hv1"}]

    ended = call(live.url, live.admin, "DELETE", "/v1/migrations", **DB)
    assert ended.status_code == 204
    after = desired("hv1", after=revision, have=moving, wait=30)
    assert "acme/db-1" not in workloads(after) and after.json()["digest"] == digest
    assert call(live.url, live.admin, "GET", "/v1/migrations").json() == []


def test_refusals(live_sqlite: Live) -> None:
    live = live_sqlite
    call(live.url, live.admin, "POST", "/v1/apply", {"documents": example_documents()})
    nobody = call(
        live.url, live.admin, "POST", "/v1/migrations", {**DB, "workload": "x", "to": "hv1"}
    )
    assert nobody.status_code == 404 and "acme/x" in nobody.json()["error"]
    there = call(live.url, live.admin, "POST", "/v1/migrations", {**DB, "to": "hv2"})
    assert there.status_code == 422 and "already runs on hv2" in there.text
    bad = call(live.url, live.admin, "POST", "/v1/migrations", {**DB, "to": "HV 1"})
    assert bad.status_code == 422
    agent = call(live.url, live.admin, "POST", "/v1/tokens", {"role": "agent", "host": "hv1"})
    refused = call(live.url, agent.json()["token"], "POST", "/v1/migrations", {**DB, "to": "hv1"})
    assert refused.status_code == 403
    assert call(live.url, live.admin, "DELETE", "/v1/migrations", **DB).status_code == 404
