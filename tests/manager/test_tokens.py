"""Token listing and revocation on both stores: no secret ever listed, a revoked token is
refused at once, the last provider-admin token stays."""

from __future__ import annotations

from tests.manager.conftest import Live
from tests.manager.support import call


def test_list_shows_no_secret_and_revoke_refuses_at_once(live: Live) -> None:
    created = call(live.url, live.admin, "POST", "/v1/tokens", {"role": "agent", "host": "hv1"})
    assert created.status_code == 201
    agent = created.json()
    assert set(agent) == {"id", "token", "role", "tenant", "host", "created", "expires"}
    auditor = call(live.url, live.admin, "POST", "/v1/tokens", {"role": "auditor"}).json()

    listed = call(live.url, live.admin, "GET", "/v1/tokens")
    assert listed.status_code == 200
    tokens = listed.json()
    assert [t["id"] for t in tokens] == sorted(t["id"] for t in tokens)
    by_id = {t["id"]: t for t in tokens}
    assert by_id[agent["id"]] == {
        k: agent[k] for k in ("id", "role", "tenant", "host", "created", "expires")
    }
    assert by_id[auditor["id"]]["role"] == "auditor"
    assert sorted(t["role"] for t in tokens) == ["agent", "auditor", "provider-admin"]
    for secret in (agent["token"], auditor["token"], live.admin):
        assert secret not in listed.text
    assert all(set(t) == {"id", "role", "tenant", "host", "created", "expires"} for t in tokens)

    path = "/v1/agent/hv1/desired"
    assert call(live.url, agent["token"], "GET", path, after=-1).status_code == 200
    assert call(live.url, live.admin, "DELETE", f"/v1/tokens/{agent['id']}").status_code == 204
    refused = call(live.url, agent["token"], "GET", path, after=-1)
    assert refused.status_code == 401 and refused.json()["error"]
    assert call(live.url, auditor["token"], "GET", "/v1/history").status_code == 200
    again = call(live.url, live.admin, "DELETE", f"/v1/tokens/{agent['id']}")
    assert again.status_code == 404 and agent["id"] in again.json()["error"]
    remaining = {t["id"] for t in call(live.url, live.admin, "GET", "/v1/tokens").json()}
    assert agent["id"] not in remaining and auditor["id"] in remaining


def test_the_last_provider_admin_token_stays(live: Live) -> None:
    tokens = call(live.url, live.admin, "GET", "/v1/tokens").json()
    (admin,) = [t for t in tokens if t["role"] == "provider-admin"]
    r = call(live.url, live.admin, "DELETE", f"/v1/tokens/{admin['id']}")
    assert r.status_code == 409 and "last provider-admin" in r.json()["error"]
    assert call(live.url, live.admin, "GET", "/v1/tokens").status_code == 200

    second = call(live.url, live.admin, "POST", "/v1/tokens", {"role": "provider-admin"}).json()
    # with a second one, an admin may revoke its own token (and is refused right after)
    assert call(live.url, live.admin, "DELETE", f"/v1/tokens/{admin['id']}").status_code == 204
    assert call(live.url, live.admin, "GET", "/v1/tokens").status_code == 401
    left = call(live.url, second["token"], "GET", "/v1/tokens").json()
    assert [t["id"] for t in left] == [second["id"]]
