"""Finding 3 of issue 12: a tenant learns nothing of another tenant's documents from
conflict errors (also in a dry run), `history` or `revisions/N`."""

from __future__ import annotations

from tests.manager.support import group
from tests.security.conftest import Fleet, workload


def test_an_address_conflict_does_not_name_the_other_tenants_workload(fleet: Fleet) -> None:
    revision = fleet.revision()
    taken = workload("probe", "acme", "10.2.0.22", "52:54:00:77:00:01")  # globex-web-2's IP
    for dry in (True, False):
        r = fleet.call("acme", "POST", "/v1/apply", {"documents": [taken], "dryRun": dry})
        assert r.status_code == 422
        text = r.text
        assert "globex" not in text and "web-2" not in text
        assert "another tenant" in text
    r = fleet.call("provider", "POST", "/v1/apply", {"documents": [taken], "dryRun": True})
    assert r.status_code == 422 and "globex/globex-web-2" in r.text  # the provider may see it
    assert fleet.revision() == revision


def test_history_shows_other_tenants_revisions_without_their_content(fleet: Fleet) -> None:
    secret = group("secret-project-x", "globex")
    r = fleet.call(
        "globex", "POST", "/v1/apply", {"documents": [secret], "message": "globex plans"}
    )
    assert r.status_code == 200, r.text
    number = r.json()["revision"]
    r = fleet.call("globex", "DELETE", "/v1/documents/Group/secret-project-x", tenant="globex")
    assert r.status_code == 200
    deleted = r.json()["revision"]
    for n in (number, deleted):
        [entry] = fleet.call("acme", "GET", "/v1/history", limit=1, before=n + 1).json()
        assert entry["revision"] == n
        assert entry["message"] == "a revision by another tenant"
        assert entry["author"] == "another tenant"
        assert entry["added"] == entry["changed"] == entry["removed"] == []
        detail = fleet.call("acme", "GET", f"/v1/revisions/{n}").json()
        assert "secret" not in str(detail) and "globex" not in str(detail)
        own = fleet.call("globex", "GET", f"/v1/revisions/{n}").json()
        assert "secret-project-x" in str(own)  # its own tenant sees everything
    audit = fleet.call("auditor", "GET", f"/v1/revisions/{number}").json()
    assert audit["message"] == "globex plans"
