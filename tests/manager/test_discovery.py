"""Discovered workloads (`PUT /v1/agent/HOST/discovered`) on a real manager and SQLite store:
commits authored by the agent, deletes, migration, RBAC, refusal of one domain, conflicts
with declared workloads in `status`, references to workloads that went away."""

from __future__ import annotations

from typing import Any

import pytest

from tests.manager.conftest import Live
from tests.manager.support import call, group

API = "hyperwall.io/v1"


def tenant(name: str) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Tenant", "metadata": {"name": name}, "spec": {}}


def workload(
    name: str, host: str, ip: str, mac: str, tenant: str | None = "acme", role: str = "web"
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": {"role": role}}
    if tenant is not None:
        metadata["tenant"] = tenant
    return {
        "apiVersion": API,
        "kind": "Workload",
        "metadata": metadata,
        "spec": {"host": host, "interfaces": [{"name": "eth0", "mac": mac, "ips": [ip]}]},
    }


def vm_policy(domain: str, tenant: str = "acme", **appliedTo: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Policy",
        "metadata": {"name": f"vm-{domain}", "tenant": tenant},
        "spec": {
            "appliedTo": appliedTo or {"workload": domain},
            "rules": [{"name": "ssh", "action": "allow", "services": ["tcp/22"]}],
        },
    }


WEB1 = workload("web-1", "hv1", "10.0.0.11", "52:54:00:00:00:11")
DB1 = workload("db-1", "hv1", "10.0.0.21", "52:54:00:00:00:21", role="db")


def report(*documents: dict[str, Any], **unmanaged: str) -> dict[str, Any]:
    names = {d["metadata"]["name"] for d in documents if d["kind"] == "Workload"}
    domains = {
        n: {"state": "running", "managed": True, "taps": [{"mac": "52:54:00:00:00:01"}]}
        for n in names
    }
    domains.update({n: {"state": "running", "managed": False, "taps": []} for n in unmanaged})
    return {"documents": list(documents), "domains": domains, "unmanaged": unmanaged}


@pytest.fixture
def agents(live_sqlite: Live) -> dict[str, str]:
    """Agent tokens of hv1 and hv2 on a manager holding the tenants acme and globex."""
    live = live_sqlite
    r = call(live.url, live.admin, "POST", "/v1/apply", {"documents": [tenant("acme")]})
    assert r.status_code == 200
    return {
        h: call(live.url, live.admin, "POST", "/v1/tokens", {"role": "agent", "host": h}).json()[
            "token"
        ]
        for h in ("hv1", "hv2")
    }


def put(live: Live, token: str, host: str, body: dict[str, Any]) -> Any:
    return call(live.url, token, "PUT", f"/v1/agent/{host}/discovered", body)


def stored(live: Live, kind: str = "Workload") -> dict[str, dict[str, Any]]:
    docs = call(live.url, live.admin, "GET", "/v1/documents", kind=kind).json()["documents"]
    return {d["metadata"]["name"]: d for d in docs}


def history(live: Live) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = call(live.url, live.admin, "GET", "/v1/history").json()
    return result


def host_status(live: Live, host: str) -> dict[str, Any]:
    hosts = call(live.url, live.admin, "GET", "/v1/status").json()["hosts"]
    return next(h for h in hosts if h["host"] == host)


def test_a_report_commits_once_authored_by_the_agent(
    live_sqlite: Live, agents: dict[str, str]
) -> None:
    live = live_sqlite
    r = put(live, agents["hv1"], "hv1", report(WEB1, vm_policy("web-1"), DB1))
    assert r.status_code == 200, r.text
    assert r.json()["created"] and r.json()["refused"] == {}
    assert set(stored(live)) == {"web-1", "db-1"}
    assert set(stored(live, "Policy")) == {"vm-web-1"}
    newest = history(live)[0]
    assert newest["author"].startswith("agent@hv1:")
    assert newest["message"] == "discovered on hv1: +db-1 +web-1"
    again = put(live, agents["hv1"], "hv1", report(WEB1, vm_policy("web-1"), DB1))
    assert again.json()["created"] is False and again.json()["revision"] == newest["revision"]
    assert history(live)[0]["revision"] == newest["revision"]
    # a relabel is a change; a removed domain goes with its embedded policy
    relabelled = workload("db-1", "hv1", "10.0.0.21", "52:54:00:00:00:21", role="cache")
    r = put(live, agents["hv1"], "hv1", report(relabelled))
    assert r.json()["message"] == "discovered on hv1: ~db-1 -web-1"
    assert set(stored(live)) == {"db-1"} and stored(live, "Policy") == {}
    assert stored(live)["db-1"]["metadata"]["labels"] == {"role": "cache"}


def test_a_late_report_of_the_old_host_does_not_delete_a_migrated_vm(
    live_sqlite: Live, agents: dict[str, str]
) -> None:
    live = live_sqlite
    assert put(live, agents["hv1"], "hv1", report(WEB1, vm_policy("web-1"))).status_code == 200
    moved = workload("web-1", "hv2", "10.0.0.11", "52:54:00:00:00:11")
    r = put(live, agents["hv2"], "hv2", report(moved, vm_policy("web-1")))
    assert r.json()["conflicts"] == []  # a migration, not a conflict
    assert stored(live)["web-1"]["spec"]["host"] == "hv2"
    late = put(live, agents["hv1"], "hv1", report())
    assert late.json()["created"] is False
    assert stored(live)["web-1"]["spec"]["host"] == "hv2"
    assert set(stored(live, "Policy")) == {"vm-web-1"}


def test_only_the_hosts_own_agent_may_report_its_workloads(
    live_sqlite: Live, agents: dict[str, str]
) -> None:
    live = live_sqlite
    r = put(live, agents["hv2"], "hv1", report(WEB1))
    assert r.status_code == 403
    r = put(live, agents["hv2"], "hv2", report(WEB1))  # a workload of hv1
    assert r.status_code == 403 and "document 1 (Workload acme/web-1)" in r.json()["error"]
    r = put(live, agents["hv1"], "hv1", report(WEB1, vm_policy("web-1", web="x")))
    assert r.status_code == 422 and "appliedTo" in r.text
    r = put(live, agents["hv1"], "hv1", report(WEB1, vm_policy("db-1")))
    assert r.status_code == 422 and "vm-X" in r.text
    r = put(live, agents["hv1"], "hv1", report(WEB1, group("g")))
    assert r.status_code == 422
    assert stored(live) == {}
    r = put(live, live.admin, "hv1", report(WEB1))  # provider-admin may
    assert r.status_code == 200 and set(stored(live)) == {"web-1"}


def test_a_domain_that_does_not_validate_is_refused_alone(
    live_sqlite: Live, agents: dict[str, str]
) -> None:
    live = live_sqlite
    put(live, agents["hv1"], "hv1", report(DB1))
    bad_tenant = workload("web-1", "hv1", "10.0.0.11", "52:54:00:00:00:11", tenant="nobody")
    taken = workload("web-2", "hv1", "10.0.0.21", "52:54:00:00:00:12")  # db-1's address
    r = put(live, agents["hv1"], "hv1", report(DB1, bad_tenant, taken, off="no metadata"))
    assert r.status_code == 200
    refused = r.json()["refused"]
    assert set(refused) == {"web-1", "web-2"}
    assert "unknown tenant 'nobody'" in refused["web-1"]
    assert "10.0.0.21" in refused["web-2"]
    assert set(stored(live)) == {"db-1"}
    unmanaged = host_status(live, "hv1")["unmanaged"]
    assert set(unmanaged) == {"web-1", "web-2", "off"}
    assert unmanaged["web-1"].startswith("refused by the manager: ")
    # a domain committed before and refused now fails closed: it is deleted
    put(live, agents["hv1"], "hv1", report(DB1, WEB1))
    bad_db = workload("db-1", "hv1", "10.0.0.11", "52:54:00:00:00:21")  # web-1's address
    r = put(live, agents["hv1"], "hv1", report(bad_db, WEB1))
    assert set(r.json()["refused"]) == {"db-1"} and set(stored(live)) == {"web-1"}


def test_a_declared_workload_that_disagrees_is_replaced_and_shown_in_status(
    live_sqlite: Live, agents: dict[str, str]
) -> None:
    live = live_sqlite
    declared = workload("web-1", "hv9", "10.0.0.99", "52:54:00:00:00:11")
    call(live.url, live.admin, "POST", "/v1/apply", {"documents": [declared]})
    r = put(live, agents["hv1"], "hv1", report(WEB1))
    (conflict,) = r.json()["conflicts"]
    assert conflict["workload"] == "acme/web-1" and conflict["declared"]["host"] == "hv9"
    assert stored(live)["web-1"]["spec"]["host"] == "hv1"  # the discovered one wins
    put(live, agents["hv1"], "hv1", report(WEB1))  # still shown after the next report
    assert [c["workload"] for c in host_status(live, "hv1")["conflicts"]] == ["acme/web-1"]
    # they agree again: the declaration is re-applied with the discovered placement
    agreeing = workload("web-1", "hv1", "10.0.0.11", "52:54:00:00:00:11", role="frontend")
    call(live.url, live.admin, "POST", "/v1/apply", {"documents": [agreeing]})
    r = put(live, agents["hv1"], "hv1", report(WEB1))
    assert r.json()["conflicts"] == [] and host_status(live, "hv1")["conflicts"] == []
    assert stored(live)["web-1"]["metadata"]["labels"] == {"role": "web"}


def test_a_vm_named_by_a_group_may_go_away(live_sqlite: Live, agents: dict[str, str]) -> None:
    live = live_sqlite
    put(live, agents["hv1"], "hv1", report(WEB1, DB1))
    named = group("front", members=["web-1"])
    assert call(live.url, live.admin, "POST", "/v1/apply", {"documents": [named]}).is_success
    # people may not delete a workload a group names ...
    r = call(live.url, live.admin, "DELETE", "/v1/documents/Workload/web-1", tenant="acme")
    assert r.status_code == 422
    # ... but the hypervisor's reality is never refused
    r = put(live, agents["hv1"], "hv1", report(DB1))
    assert r.json()["refused"] == {} and set(stored(live)) == {"db-1"}
    # the stored set stays usable: other changes go on, a new typo is still refused
    other = group("back", members=["db-1"])
    assert call(live.url, live.admin, "POST", "/v1/apply", {"documents": [other]}).is_success
    typo = group("typo", members=["ghost"])
    r = call(live.url, live.admin, "POST", "/v1/apply", {"documents": [typo]})
    assert r.status_code == 422 and "ghost" in r.text
    # the VM comes back: the group's reference matches it again
    assert put(live, agents["hv1"], "hv1", report(WEB1, DB1)).json()["created"]
