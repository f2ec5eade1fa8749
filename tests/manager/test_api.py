"""The manager API on both stores: apply, validation, queries, diff, history, rollback,
agent long-poll and status."""

from __future__ import annotations

import copy
import os
import stat
import threading
import time
from typing import Any

from hyperwall.compiler.delta import apply
from hyperwall.compiler.digest import digest_text, program_digest
from hyperwall.compiler.fleet import compile_host
from hyperwall.compiler.program import HostProgram
from hyperwall.compiler.program_codec import delta_from_wire, program_from_wire
from hyperwall.policy.catalog import build_catalog
from hyperwall.policy.errors import Source
from tests.agent.test_manager_source import relabel
from tests.manager.conftest import Live, example_documents
from tests.manager.support import call, group


def test_bootstrap_token_file_is_private(live: Live) -> None:
    mode = stat.S_IMODE(os.stat(live.token_file).st_mode)
    assert mode == 0o600
    assert live.admin.startswith("hw_")


def test_apply_is_a_revision_and_identical_set_is_none(live: Live) -> None:
    docs = example_documents()
    r = call(live.url, live.admin, "POST", "/v1/apply", {"documents": docs, "message": "m"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["revision"] == 1 and body["created"] is True
    assert body["hostsChanged"] == ["hv1", "hv2"]
    again = call(live.url, live.admin, "POST", "/v1/apply", {"documents": docs})
    assert again.json()["created"] is False and again.json()["revision"] == 1
    history = call(live.url, live.admin, "GET", "/v1/history").json()
    assert [h["revision"] for h in history] == [1]
    assert history[0]["author"].startswith("provider-admin:") and history[0]["message"] == "m"


def test_invalid_set_is_refused_whole_with_every_issue(live: Live) -> None:
    bad = [group("ok", None), group("bad", "acme", members=["nope"])]
    r = call(live.url, live.admin, "POST", "/v1/apply", {"documents": bad})
    assert r.status_code == 422
    errors = r.json()["errors"]
    assert any(e["path"] == "spec.members[0]" and e["document"] == 2 for e in errors)
    assert any("unknown tenant" in e["message"] for e in errors)
    assert call(live.url, live.admin, "GET", "/v1/history").json() == []
    malformed = call(live.url, live.admin, "POST", "/v1/apply", {"documents": [{"x": 1}]})
    assert malformed.status_code == 422 and malformed.json()["errors"]


def test_queries_filters_delete_and_diff(live: Live) -> None:
    call(live.url, live.admin, "POST", "/v1/apply", {"documents": example_documents()})
    web = call(
        live.url, live.admin, "GET", "/v1/documents", kind="workload", selector='role == "web"'
    ).json()["documents"]
    assert {d["metadata"]["name"] for d in web} == {
        "web-1",
        "web-2",
        "globex-web-1",
        "globex-web-2",
    }
    acme = call(live.url, live.admin, "GET", "/v1/documents", kind="Group", tenant="acme")
    assert all(d["metadata"]["tenant"] == "acme" for d in acme.json()["documents"])
    one = call(live.url, live.admin, "GET", "/v1/documents/Workload/lb-1", tenant="acme")
    assert one.status_code == 200 and one.json()["spec"]["host"] == "hv1"
    assert call(live.url, live.admin, "GET", "/v1/documents/Workload/none").status_code == 404
    bad = call(live.url, live.admin, "GET", "/v1/documents", selector="role ==")
    assert bad.status_code == 422

    lb = copy.deepcopy(one.json())
    lb["metadata"]["labels"]["role"] = "web"
    diff = call(live.url, live.admin, "POST", "/v1/diff", {"documents": [lb]}).json()
    assert [c["action"] for c in diff["changes"]] == ["change"]
    assert "hv1" in diff["hostsChanged"]
    dry = call(live.url, live.admin, "POST", "/v1/apply", {"documents": [lb], "dryRun": True})
    assert dry.json()["dryRun"] is True and dry.json()["revision"] == 1

    # deleting a referenced document leaves an invalid set: refused
    r = call(live.url, live.admin, "DELETE", "/v1/documents/Tenant/acme")
    assert r.status_code == 422
    call(live.url, live.admin, "POST", "/v1/apply", {"documents": [group("extra")]})
    r = call(live.url, live.admin, "DELETE", "/v1/documents/Group/extra", tenant="acme")
    assert r.status_code == 200 and r.json()["revision"] == 3


def test_history_revision_and_rollback(live: Live) -> None:
    call(live.url, live.admin, "POST", "/v1/apply", {"documents": example_documents()})
    call(live.url, live.admin, "POST", "/v1/apply", {"documents": [group("extra")]})
    history = call(live.url, live.admin, "GET", "/v1/history").json()
    assert [h["revision"] for h in history] == [2, 1]
    detail = call(live.url, live.admin, "GET", "/v1/revisions/2").json()
    assert detail["changes"][0]["name"] == "extra" and detail["changes"][0]["before"] is None
    r = call(live.url, live.admin, "POST", "/v1/rollback/1").json()
    assert r == {"revision": 3, "created": True, "hostsChanged": []}
    names = call(live.url, live.admin, "GET", "/v1/documents", kind="Group", tenant="acme")
    assert "extra" not in {d["metadata"]["name"] for d in names.json()["documents"]}
    assert call(live.url, live.admin, "POST", "/v1/rollback/1").json()["created"] is False
    assert call(live.url, live.admin, "GET", "/v1/revisions/9").status_code == 404


def _examples_program(docs: list[dict[str, Any]], host: str) -> HostProgram:
    catalog = build_catalog((d, Source("t", i)) for i, d in enumerate(docs))
    return compile_host(catalog.config, catalog.workloads, host)


def test_agent_desired_long_poll_gets_its_program_then_deltas(live: Live) -> None:
    agent = call(live.url, live.admin, "POST", "/v1/tokens", {"role": "agent", "host": "hv1"})
    token = agent.json()["token"]
    path = "/v1/agent/hv1/desired"
    assert call(live.url, token, "GET", path, after=0, wait=0.2).status_code == 204
    docs = example_documents()
    call(live.url, live.admin, "POST", "/v1/apply", {"documents": docs})
    now = call(live.url, token, "GET", path, after=0, wait=30)
    assert now.status_code == 200 and now.json()["revision"] == 1
    held = program_from_wire(now.json()["program"])
    assert held == _examples_program(docs, "hv1")  # the host's slice, compiled
    assert now.json()["digest"] == digest_text(program_digest(held))
    have = now.json()["digest"]

    def later(documents: list[dict[str, Any]]) -> None:
        time.sleep(0.5)
        call(live.url, live.admin, "POST", "/v1/apply", {"documents": documents})

    # a group nobody uses: a new revision, the same program (an empty delta)
    thread = threading.Thread(target=later, args=([group("extra")],))
    thread.start()
    r = call(live.url, token, "GET", path, after=1, have=have, wait=30)
    thread.join()
    assert r.status_code == 200 and r.json()["revision"] == 2
    assert r.json()["base"] == have and r.json()["digest"] == have
    assert delta_from_wire(r.json()["delta"]).is_empty()  # answered by the apply, not the wait

    # a label change that moves web-1 out of the web group: the delta leads to the program
    moved = relabel(docs, "web-1", "app")
    call(live.url, live.admin, "POST", "/v1/apply", {"documents": moved})
    r = call(live.url, token, "GET", path, after=2, have=have, wait=30)
    change = delta_from_wire(r.json()["delta"])
    assert not change.is_empty()
    expected = _examples_program([*moved, group("extra")], "hv1")
    assert apply(held, change) == expected
    assert r.json()["digest"] == digest_text(program_digest(expected))
    # a digest the manager does not know: the whole program, at once
    r = call(live.url, token, "GET", path, after=3, have="0" * 32, wait=30)
    assert program_from_wire(r.json()["program"]) == expected


def test_status_states(live: Live) -> None:
    call(live.url, live.admin, "POST", "/v1/apply", {"documents": example_documents()})
    ok = {"revision": 1, "programHash": "abc", "converged": True, "error": None, "endpoints": 3}
    assert call(live.url, live.admin, "PUT", "/v1/agent/hv1/status", ok).status_code == 204
    bad = {**ok, "converged": False, "error": "apply failed"}
    assert call(live.url, live.admin, "PUT", "/v1/agent/hv2/status", bad).status_code == 204
    inventory = {"workloads": [example_documents()[0]]}
    r = call(live.url, live.admin, "PUT", "/v1/agent/hv3/inventory", inventory)
    assert r.status_code == 204
    status = call(live.url, live.admin, "GET", "/v1/status").json()
    states = {h["host"]: h["state"] for h in status["hosts"]}
    assert states == {"hv1": "in-sync", "hv2": "error"}
    call(live.url, live.admin, "POST", "/v1/apply", {"documents": [group("extra")]})
    status = call(live.url, live.admin, "GET", "/v1/status").json()
    assert {h["host"]: h["state"] for h in status["hosts"]}["hv1"] == "pending"
    assert call(live.url, live.admin, "PUT", "/v1/agent/hv1/status", {}).status_code == 422
